//! nap's gateway: the `nap` binary's library. `main.rs` only parses the
//! command line and hands it to [`cli::main`].
//!
//! See `ARCHITECTURE.md` for the path of a push through these modules.

pub mod acme;
pub mod app_name;
pub mod caller;
pub mod cli;
pub mod commands;
pub mod context;
pub mod deploy;
pub mod following;
pub mod history;
pub mod hook;
pub mod hosts;
pub mod keys;
pub mod lifeline;
pub mod liveness;
pub mod log_format;
pub mod log_writer;
pub mod networks;
pub mod remote;
pub mod report;
pub mod repos;
pub mod router;
pub mod server;
pub mod settings;
pub mod swarm_tasks;
pub mod terminal;
pub mod usage;
