//! The runner: turns a built image into a serving release.
//!
//! [`docker`] runs each release as one container. A release only replaces the
//! previous one after it answers on its port ([`check`]).

mod check;
pub mod docker;

pub use docker::{DockerRunner, Instance, RunError, RunRequest, Running};

/// Docker labels nap puts on what it runs, so it can find its own containers.
pub mod labels {
    pub const APP: &str = "nap.app";
    pub const RELEASE: &str = "nap.release";
}
