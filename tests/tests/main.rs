//! nap's end-to-end tests: one test binary (as cargo's own testsuite), so
//! the workspace is linked once, with a module per area. Each test starts
//! what it needs (a gateway, an app, a private etcd) and cleans up after
//! itself; the shared helpers are the `nap_tests` library (`tests/src`).
//! Run one area with `cargo nextest run -p nap-tests -E 'test(/^push::/)'`.

mod bounds;
mod commiter;
mod concurrency;
mod entrypoint;
mod examples;
mod failures;
mod faults;
mod gateway;
mod hostnames;
mod https;
mod images;
mod interface;
mod kubernetes;
mod limits;
mod logins;
mod migration;
mod networks;
mod openssh;
mod operate;
mod processes;
mod push;
mod refusals;
mod registry;
mod release_flow;
mod router;
mod secrets;
mod store;
mod structure;
mod swarm;
mod systemd;
mod upstream;
mod walkthrough;
mod watch;
