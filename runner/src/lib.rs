//! The runner: turns a built image into a serving release.
//!
//! Three runners share one interface, [`Runner`]:
//! - [`docker`] runs each release as a container through the Docker API;
//! - [`systemd`] runs each release as a systemd unit (`nap-APP@N.service`)
//!   started over D-Bus, whose `ExecStart` runs the container;
//! - [`kubernetes`] applies each release to a cluster with `kubectl`.
//!
//! A release only replaces the previous one after it answers on its port
//! ([`check`]), or, on Kubernetes, after its pods are ready.
//! The templates they render are in [`units`].

mod check;
pub mod docker;
mod error;
pub mod kubernetes;
mod limits;
mod release;
pub mod systemd;
pub mod units;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

pub use docker::network::AppNetwork;
pub use docker::{DockerRunner, Lifecycle};
pub use error::{KubernetesError, RunError, SystemdError, UnknownName};
pub use kubernetes::{KubernetesRunner, KubernetesSettings, WorkloadKind};
pub use limits::{ByteSize, Cpus, LimitName, Limits, LimitsError};
pub use release::{Instance, InstanceId, Progress, RunRequest, Running, Serving};
pub use systemd::{SystemdRunner, SystemdSettings};

/// Docker labels nap puts on what it runs, so it can find its own containers.
pub mod labels {
    use std::collections::HashMap;

    use crate::release::{InstanceId, RunRequest};

    pub const APP: &str = "nap.app";
    pub const RELEASE: &str = "nap.release";
    /// Which start of the release (absent: the first).
    pub const RESTARTS: &str = "nap.restarts";
    /// The port the app listens on inside the container.
    pub const PORT: &str = "nap.port";

    /// The labels of the container that runs `req`.
    pub fn of(req: &RunRequest<'_>) -> HashMap<String, String> {
        HashMap::from([
            (APP.to_owned(), req.app.to_owned()),
            (RELEASE.to_owned(), req.id.release.to_string()),
            (RESTARTS.to_owned(), req.id.restarts.to_string()),
            (PORT.to_owned(), req.port.to_string()),
        ])
    }

    /// Which instance a container's labels say it runs.
    pub fn instance<S: std::hash::BuildHasher>(labels: &HashMap<String, String, S>) -> Option<InstanceId> {
        let release = labels.get(RELEASE)?.parse().ok()?;
        let restarts = labels.get(RESTARTS).map_or(Some(0), |r| r.parse().ok())?;
        Some(InstanceId { release, restarts })
    }
}

/// Which runner to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    Docker,
    Systemd,
    Kubernetes,
}

impl std::str::FromStr for RunnerKind {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        UnknownName::parse(text, "runner", "docker, systemd or kubernetes")
    }
}

pub enum Runner {
    Docker(DockerRunner),
    Systemd(Box<SystemdRunner>),
    Kubernetes(Box<KubernetesRunner>),
}

impl Runner {
    /// The Kubernetes runner: it needs no Docker daemon on this host.
    pub fn kubernetes(settings: KubernetesSettings, public_host: String) -> Result<Runner, RunError> {
        Ok(Runner::Kubernetes(Box::new(KubernetesRunner::new(settings, public_host)?)))
    }

    /// Picks the runner: `kind` if given, else systemd when the system bus
    /// has `org.freedesktop.systemd1`, else Docker. Kubernetes is never
    /// guessed; [`Runner::kubernetes`] makes it without a Docker daemon.
    pub async fn select(
        kind: Option<RunnerKind>,
        docker: DockerRunner,
        systemd: SystemdSettings,
        kubernetes: &KubernetesSettings,
        public_host: String,
        check_timeout: Duration,
    ) -> Result<Runner, RunError> {
        let bus = match kind {
            Some(RunnerKind::Docker) => return Ok(Runner::Docker(docker)),
            Some(RunnerKind::Kubernetes) => return Runner::kubernetes(kubernetes.clone(), public_host),
            Some(RunnerKind::Systemd) => {
                let bus = systemd::connect_bus(systemd.bus_address.as_deref()).await?;
                if !systemd::systemd_on_bus(&bus).await {
                    return Err(SystemdError::NotOnBus(
                        systemd.bus_address.clone().unwrap_or_else(|| "the default system bus".into()),
                    )
                    .into());
                }
                bus
            }
            None => match systemd::connect_bus(systemd.bus_address.as_deref()).await {
                Ok(bus) if systemd::systemd_on_bus(&bus).await => bus,
                _ => return Ok(Runner::Docker(docker)),
            },
        };
        let runner = SystemdRunner::new(bus, docker, systemd, check_timeout).await?;
        Ok(Runner::Systemd(Box::new(runner)))
    }

    pub fn kind(&self) -> RunnerKind {
        match self {
            Runner::Docker(_) => RunnerKind::Docker,
            Runner::Systemd(_) => RunnerKind::Systemd,
            Runner::Kubernetes(_) => RunnerKind::Kubernetes,
        }
    }

    /// What runs nap's releases, by app: containers, or pods on Kubernetes.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        match self {
            Runner::Docker(docker) => docker.instances(app).await,
            Runner::Systemd(systemd) => systemd.docker().instances(app).await,
            Runner::Kubernetes(kubernetes) => kubernetes.instances(app).await,
        }
    }

    /// The output of `app`'s release running as `container`: the last
    /// `tail` lines, then (with `follow`) whatever comes until the stream
    /// is dropped.
    pub fn logs(
        &self,
        app: &str,
        container: &str,
        tail: Option<u64>,
        follow: bool,
    ) -> BoxStream<'static, Result<bytes::Bytes, RunError>> {
        match self {
            Runner::Docker(docker) => docker.logs(container, tail, follow).boxed(),
            Runner::Systemd(systemd) => systemd.docker().logs(container, tail, follow).boxed(),
            Runner::Kubernetes(kubernetes) => kubernetes.logs(app, tail, follow).boxed(),
        }
    }

    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        match self {
            Runner::Docker(docker) => docker.start(req, progress).await,
            Runner::Systemd(systemd) => systemd.start(req, progress).await,
            Runner::Kubernetes(kubernetes) => kubernetes.start(req, progress).await,
        }
    }

    /// Takes back instance `id` of `app` that was started but must not
    /// serve (its record could not be kept), leaving the previous one serving.
    pub async fn discard(&self, app: &str, id: InstanceId) -> Result<(), RunError> {
        match self {
            Runner::Docker(docker) => docker.remove(&id.container(app)).await,
            Runner::Systemd(systemd) => systemd.remove_instance(app, id).await,
            Runner::Kubernetes(kubernetes) => kubernetes.discard(app, id.release).await,
        }
    }

    /// Retires every instance of `app` but `keep` (all of them with `None`).
    pub async fn retire_all_but(&self, app: &str, keep: Option<InstanceId>) -> Result<Vec<String>, RunError> {
        match self {
            Runner::Docker(docker) => docker.retire_all_but(app, keep).await,
            Runner::Systemd(systemd) => systemd.retire_all_but(app, keep).await,
            Runner::Kubernetes(kubernetes) => kubernetes.retire_all_but(app, keep.map(|id| id.release)).await,
        }
    }
}
