//! The runner: turns a built image into a serving release.
//!
//! Four runners share one interface, [`Runner`]:
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

pub mod app_json;
mod check;
pub mod docker;
mod error;
pub mod kubernetes;
pub mod labels;
mod limits;
mod network;
pub mod process;
mod release;
pub mod swarm;
pub mod systemd;
pub mod units;

use std::collections::HashMap;
use std::time::Duration;

pub use app_json::{AppJson, AppJsonError};
pub use check::HealthCheck;
pub use docker::{DockerRunner, Lifecycle};
pub use error::{CheckFailed, KubernetesError, RunError, SwarmError, SystemdError, UnknownName};
pub use kubernetes::{KubernetesRunner, KubernetesSettings, WorkloadKind};
pub use limits::{ByteSize, Cpus, LimitName, Limits, LimitsError};
pub use network::AppNetwork;
pub use process::{Formation, ProcessType, Procfile, ProcfileError, Scale, ScaleError};
pub use release::{Instance, InstanceId, OneOff, Progress, RunRequest, Running, Serving};
pub use swarm::{SwarmRunner, SwarmSettings};
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

pub enum Runner {
    Docker(DockerRunner),
    Systemd(Box<SystemdRunner>),
    Kubernetes(Box<KubernetesRunner>),
    Swarm(Box<SwarmRunner>),
}

impl Runner {
    /// The Kubernetes runner: it needs no Docker daemon on this host.
    pub fn kubernetes(settings: KubernetesSettings, public_host: String) -> Result<Runner, RunError> {
        Ok(Runner::Kubernetes(Box::new(KubernetesRunner::new(settings, public_host)?)))
    }

    /// The swarm runner, on the manager `settings.host` names.
    pub async fn swarm(settings: SwarmSettings) -> Result<Runner, RunError> {
        Ok(Runner::Swarm(Box::new(SwarmRunner::connect(settings).await?)))
    }

    /// Picks the runner: `kind` if given, else systemd when the system bus
    /// has `org.freedesktop.systemd1`, else Docker. Kubernetes and Swarm are
    /// never guessed; [`Runner::kubernetes`] and [`Runner::swarm`] make them
    /// without this host's Docker daemon.
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
            Some(RunnerKind::Swarm) => return Err(SwarmError::Unsupported("choosing the swarm runner here").into()),
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

    /// This host's Docker runner, which runs the instances of the docker
    /// and systemd runners; none on Kubernetes or a swarm.
    pub fn host_docker(&self) -> Option<&DockerRunner> {
        match self {
            Runner::Docker(docker) => Some(docker),
            Runner::Systemd(systemd) => Some(systemd.docker()),
            Runner::Kubernetes(_) | Runner::Swarm(_) => None,
        }
    }

    /// Whether nap gives each app's network its subnet: on the runners
    /// whose containers run on this host's Docker, where an app's subnet
    /// must be the same on every host. A swarm and a cluster address their
    /// own networks.
    pub fn assigns_subnets(&self) -> bool {
        self.host_docker().is_some()
    }

    /// The subnets this host's networks hold, which an app's may not
    /// overlap; none where the runner addresses its own networks.
    pub async fn subnets_in_use(&self) -> Result<Vec<ipnet::Ipv4Net>, RunError> {
        match self.host_docker() {
            Some(docker) => docker.subnets_in_use().await,
            None => Ok(Vec::new()),
        }
    }

    /// Makes the app's own network exist, before anything of the app runs:
    /// a bridge network on this host's Docker, an overlay on a swarm. On
    /// Kubernetes the app's NetworkPolicy goes with each release's and
    /// one-off's manifests instead, checked with them, so a manifest the
    /// cluster would refuse sends nothing. [`RunError::SubnetTaken`] says
    /// that another network here holds part of its subnet.
    pub async fn ensure_network(&self, network: &AppNetwork) -> Result<(), RunError> {
        match self {
            Runner::Docker(docker) => docker.ensure_network(network).await,
            Runner::Systemd(systemd) => systemd.docker().ensure_network(network).await,
            Runner::Kubernetes(_) => Ok(()),
            Runner::Swarm(swarm) => swarm.ensure_network(network).await,
        }
    }

    /// Removes the app's own network (`apps destroy`), once nothing of the
    /// app runs on it.
    pub async fn remove_network(&self, network: &AppNetwork) -> Result<(), RunError> {
        match self {
            Runner::Docker(docker) => docker.remove_network(&network.name).await,
            Runner::Systemd(systemd) => systemd.docker().remove_network(&network.name).await,
            Runner::Kubernetes(cluster) => cluster.remove_network(&network.name).await,
            Runner::Swarm(swarm) => Ok(swarm.remove_network(&network.name).await?),
        }
    }

    /// The formation this runner runs when neither `ps scale` nor app.json
    /// says: on Kubernetes, `k8s_replicas` web pods.
    pub fn default_formation(&self) -> Formation {
        let mut formation = Formation::default();
        if let Runner::Kubernetes(cluster) = self {
            formation.set(ProcessType::web(), cluster.settings().replicas);
        }
        formation
    }

    pub fn kind(&self) -> RunnerKind {
        match self {
            Runner::Docker(_) => RunnerKind::Docker,
            Runner::Systemd(_) => RunnerKind::Systemd,
            Runner::Kubernetes(_) => RunnerKind::Kubernetes,
            Runner::Swarm(_) => RunnerKind::Swarm,
        }
    }

    /// What runs nap's releases, by app: containers, or pods on Kubernetes.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        match self {
            Runner::Docker(docker) => docker.instances(app).await,
            Runner::Systemd(systemd) => systemd.docker().instances(app).await,
            Runner::Kubernetes(kubernetes) => kubernetes.instances(app).await,
            Runner::Swarm(swarm) => swarm.instances(app).await,
        }
    }

    /// Starts every instance of `reqs` side by side and waits until each
    /// is ready. All of them are, or none is left running: the error is the
    /// first failure's. On Kubernetes each type is a workload with as many
    /// replicas as it has requests, and the answer is the web workload's.
    pub async fn start_all(
        &self,
        reqs: &[RunRequest<'_>],
        progress: Progress<'_>,
    ) -> Result<Vec<(InstanceId, Running)>, RunError> {
        if let Runner::Swarm(swarm) = self {
            let placement = reqs.first().map_or(&[][..], |req| req.placement);
            // Boxed: a rollout's future is large, and every release flow holds this one.
            return Box::pin(swarm.start_formation(reqs, placement, progress)).await;
        }
        if let Runner::Kubernetes(cluster) = self {
            // A workload per type, with as many replicas as it has requests.
            let mut types: Vec<(&RunRequest<'_>, u32)> = Vec::new();
            for req in reqs {
                match types.iter_mut().find(|(first, _)| first.id.process == req.id.process) {
                    Some((_, count)) => *count += 1,
                    None => types.push((req, 1)),
                }
            }
            let Some(at) = types.iter().position(|(req, _)| req.id.process.is_web()) else {
                return Err(KubernetesError::NoWeb.into());
            };
            let (web, replicas) = types.remove(at);
            let running = cluster.start_formation(web, replicas, &types, progress).await?;
            return Ok(vec![(web.id.clone(), running)]);
        }
        let started = futures_util::future::join_all(reqs.iter().map(|req| self.start(req, progress))).await;
        let mut running = Vec::new();
        let mut failure = None;
        for (req, result) in reqs.iter().zip(started) {
            match result {
                Ok(instance) => running.push((req.id.clone(), instance)),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        let Some(err) = failure else { return Ok(running) };
        for (id, _) in &running {
            if let Err(cleanup) = self.discard(reqs[0].app, id).await {
                tracing::warn!(instance = %id.name(), error = %cleanup, "could not take back a started instance");
            }
        }
        Err(err)
    }

    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        match self {
            Runner::Docker(docker) => docker.start(req, progress).await,
            Runner::Systemd(systemd) => systemd.start(req, progress).await,
            Runner::Kubernetes(kubernetes) => kubernetes.start(req, progress).await,
            Runner::Swarm(swarm) => {
                let started =
                    Box::pin(swarm.start_formation(std::slice::from_ref(req), req.placement, progress)).await?;
                started.into_iter().next().map(|(_, running)| running).ok_or_else(|| {
                    SwarmError::NoPort {
                        service: swarm::service_name(req.app, req.id.process.as_str()),
                        task: req.id.name(),
                    }
                    .into()
                })
            }
        }
    }

    /// Takes back instance `id` of `app` that was started but must not
    /// serve (its record could not be kept), leaving the previous one serving.
    pub async fn discard(&self, app: &str, id: &InstanceId) -> Result<(), RunError> {
        match self {
            Runner::Docker(docker) => docker.remove(&id.container(app)).await,
            Runner::Systemd(systemd) => systemd.remove_instance(app, id).await,
            Runner::Kubernetes(kubernetes) => kubernetes.discard(app, id.release).await,
            Runner::Swarm(swarm) => {
                swarm.roll_back(app, &id.process).await;
                Ok(())
            }
        }
    }

    /// Retires every instance of `app` but those in `keep` (all of them
    /// when it is empty).
    pub async fn retire_all_but(&self, app: &str, keep: &[InstanceId]) -> Result<Vec<String>, RunError> {
        match self {
            Runner::Docker(docker) => docker.retire_all_but(app, keep).await,
            Runner::Systemd(systemd) => systemd.retire_all_but(app, keep).await,
            Runner::Kubernetes(kubernetes) => kubernetes.retire_all_but(app, keep.first().map(|id| id.release)).await,
            // The swarm retired the previous release's tasks as it rolled
            // the new one out; what goes is the services of types not kept.
            Runner::Swarm(swarm) => {
                let kept: Vec<ProcessType> = keep.iter().map(|id| id.process.clone()).collect();
                Ok(swarm.remove_services(app, &kept).await?)
            }
        }
    }
}
