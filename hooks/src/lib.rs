//! Template hooks (`nap watch`), confd's job done right: template resources
//! ([`resource`]) name keys in the store, a tera template ([`functions`] are
//! confd's functions) and a destination; [`apply`] stages, checks, replaces
//! and reloads; [`watcher`] runs them once, on an interval, or on every
//! change, reading keys from a [`source`]; [`entrypoint`] runs an app under
//! it as an image's PID 1. (The git `pre-receive` hook is the gateway's.)

pub mod apply;
mod children;
pub mod command;
pub mod entrypoint;
pub mod functions;
pub mod resource;
pub mod source;
pub mod watcher;
