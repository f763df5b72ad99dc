//! The runner: turns a built image into a serving release.
//!
//! Four runners share one interface, [`Runner`] (picked in [`Runner::select`]):
//! - [`docker`] runs each release as a container through the Docker API;
//! - [`systemd`] runs each release as a systemd unit (`nap-APP@N.service`)
//!   started over D-Bus, whose `ExecStart` runs the container;
//! - [`kubernetes`] applies each release to a cluster with `kubectl`;
//! - [`swarm`] runs each process type as a Docker Swarm service, updated
//!   to each release through a manager's Engine API.
//!
//! A release only replaces the previous one after it answers on its port
//! ([`check`]), or, on Kubernetes, after its pods are ready.
//! The templates they render are in [`units`].

mod app_json;
mod attach;
mod check;
mod docker;
mod error;
mod kubernetes;
pub mod labels;
mod limits;
mod lines;
mod network;
mod process;
mod release;
mod runner;
mod swarm;
mod systemd;
pub mod units;

pub use app_json::{AppJson, AppJsonError, MAX_APP_JSON};
pub use attach::Client;
pub use check::HealthCheck;
pub use docker::{DockerRunner, Lifecycle, connect as connect_docker};
pub use error::{CheckFailed, KubernetesError, RunError, SwarmError, SystemdError, UnknownName};
pub use kubernetes::{KubernetesRunner, KubernetesSettings, WorkloadKind, manifest};
pub use limits::{ByteSize, Cpus, LimitName, Limits, LimitsError};
pub use lines::Lines;
pub use network::AppNetwork;
pub use process::{Formation, InvalidProcessType, ProcessType, Procfile, ProcfileError, Scale, ScaleError};
pub use release::{Instance, InstanceId, OneOff, Progress, RunRequest, Running, Serving};
pub use runner::{Runner, RunnerChoice, Watcher};
pub use swarm::{Constraint, ConstraintError, RegistryAuth, Rollout, RoutedTask, SwarmRunner, SwarmSettings};
pub use systemd::{SystemdRunner, SystemdSettings};

/// Which runner to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    Docker,
    Systemd,
    Kubernetes,
    Swarm,
}

impl RunnerKind {
    /// The runner's name, as the `runner` setting spells it.
    pub fn name(self) -> &'static str {
        match self {
            RunnerKind::Docker => "docker",
            RunnerKind::Systemd => "systemd",
            RunnerKind::Kubernetes => "kubernetes",
            RunnerKind::Swarm => "swarm",
        }
    }

    /// What one of an app's running parts is called on this runner, for
    /// messages such as `apps destroy`'s: `container`, `unit`, `object`
    /// or `service`.
    pub fn part(self) -> &'static str {
        match self {
            RunnerKind::Docker => "container",
            RunnerKind::Systemd => "unit",
            RunnerKind::Kubernetes => "object",
            RunnerKind::Swarm => "service",
        }
    }
}

impl std::str::FromStr for RunnerKind {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        UnknownName::parse(text, "runner", "docker, systemd, kubernetes or swarm")
    }
}
