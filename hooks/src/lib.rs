//! Hooks: what nap runs when something changes.
//!
//! - [`git`]: the `pre-receive` hook nap installs in each app repo, and the
//!   ref updates git hands it.
//! - Template hooks (`nap watch`), confd's job done right: template
//!   resources ([`resource`]) name keys in the store, a tera template
//!   ([`functions`] are confd's functions) and a destination; [`apply`]
//!   stages, checks, replaces and reloads; [`watcher`] runs them once, on
//!   an interval, or on every change, reading keys from a [`source`];
//!   [`entrypoint`] runs an app under it as an image's PID 1.

pub mod apply;
pub mod command;
pub mod entrypoint;
pub mod functions;
pub mod git;
pub mod resource;
pub mod source;
pub mod watcher;

pub use git::{DEPLOY_BRANCHES, HookError, RefUpdate, install_pre_receive, parse_ref_updates, pre_receive_script};
