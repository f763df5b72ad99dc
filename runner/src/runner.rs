//! The one interface the gateway runs releases through, [`Runner`]: which
//! runner runs them is picked here ([`Runner::select`]), once, and what
//! differs between the runners is asked of it, never matched on outside
//! this crate.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::RunnerKind;
use crate::attach::Client;
use crate::docker::DockerRunner;
use crate::error::{KubernetesError, RunError, SwarmError, SystemdError};
use crate::kubernetes::{KubernetesRunner, KubernetesSettings};
use crate::network::AppNetwork;
use crate::process::{Formation, ProcessType};
use crate::release::{Ended, Instance, InstanceId, OneOff, Progress, RunRequest, Running, Serving};
use crate::swarm::{self, SwarmRunner, SwarmSettings};
use crate::systemd::{self, SystemdRunner, SystemdSettings};

/// Runs releases on one of the four runners; which one is its own affair.
pub struct Runner {
    on: On,
}

enum On {
    Docker(DockerRunner),
    Systemd(Box<SystemdRunner>),
    Kubernetes(Box<KubernetesRunner>),
    Swarm(Box<SwarmRunner>),
}

/// What picking a runner takes: the one asked for (`runner`), each
/// runner's settings, and whether a registry is set.
pub struct RunnerChoice {
    /// `None`: systemd when the system bus has it, else Docker.
    pub kind: Option<RunnerKind>,
    /// Whether releases are pushed to a registry, which a cluster's nodes
    /// and a swarm's pull from.
    pub registry: bool,
    /// The network every app shared before each had its own.
    pub shared_network: AppNetwork,
    /// How long an instance gets to answer when it starts.
    pub check_timeout: Duration,
    pub systemd: SystemdSettings,
    pub kubernetes: KubernetesSettings,
    pub swarm: SwarmSettings,
    /// This host's address as clients reach it.
    pub public_host: String,
}

/// What keeps the routes true while instances come and go by themselves
/// (`nap serve` runs it beside the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watcher {
    /// Docker's events on this host: a dead instance unpublished, crashes
    /// counted ([`Runner::restarts_killed_instances`] says who restarts).
    DockerEvents,
    /// The swarm's task list, published as the tasks move.
    SwarmTasks,
    /// Nothing: a cluster's Service routes to its pods itself.
    None,
}

impl RunnerKind {
    /// What keeps the routes true under runner `kind` (`None`: the docker
    /// or systemd runner, whichever this host has).
    pub fn watcher(kind: Option<RunnerKind>) -> Watcher {
        match kind {
            Some(RunnerKind::Kubernetes) => Watcher::None,
            Some(RunnerKind::Swarm) => Watcher::SwarmTasks,
            Some(RunnerKind::Docker | RunnerKind::Systemd) | None => Watcher::DockerEvents,
        }
    }

    /// Whether runner `kind` places instances by `ps:place` constraints.
    pub fn places_instances(kind: Option<RunnerKind>) -> bool {
        kind == Some(RunnerKind::Swarm)
    }
}

impl Runner {
    /// Picks the runner: `choice.kind` if given, else systemd when the
    /// system bus has `org.freedesktop.systemd1`, else Docker. Kubernetes
    /// and Swarm are never guessed, need a registry, and need no Docker
    /// daemon on this host.
    pub async fn select(choice: RunnerChoice) -> Result<Runner, RunError> {
        let on = match choice.kind {
            Some(RunnerKind::Kubernetes) => {
                // The cluster pulls the release's image, so it must be in a registry.
                if !choice.registry {
                    return Err(RunError::NoClusterRegistry);
                }
                On::Kubernetes(Box::new(KubernetesRunner::new(choice.kubernetes, choice.public_host)?))
            }
            Some(RunnerKind::Swarm) => {
                // Every node pulls the release's image from the registry.
                if !choice.registry {
                    return Err(RunError::NoSwarmRegistry);
                }
                On::Swarm(Box::new(Box::pin(SwarmRunner::connect(choice.swarm)).await?))
            }
            Some(RunnerKind::Docker) => {
                On::Docker(DockerRunner::connect(choice.shared_network, choice.check_timeout).await?)
            }
            Some(RunnerKind::Systemd) => {
                let docker = DockerRunner::connect(choice.shared_network, choice.check_timeout).await?;
                let bus = systemd::connect_bus(choice.systemd.bus_address.as_deref()).await?;
                if !systemd::systemd_on_bus(&bus).await {
                    let bus = choice.systemd.bus_address.clone().unwrap_or_else(|| "the default system bus".into());
                    return Err(SystemdError::NotOnBus(bus).into());
                }
                On::Systemd(Box::new(SystemdRunner::new(bus, docker, choice.systemd, choice.check_timeout).await?))
            }
            None => {
                let docker = DockerRunner::connect(choice.shared_network, choice.check_timeout).await?;
                match systemd::connect_bus(choice.systemd.bus_address.as_deref()).await {
                    Ok(bus) if systemd::systemd_on_bus(&bus).await => On::Systemd(Box::new(
                        SystemdRunner::new(bus, docker, choice.systemd, choice.check_timeout).await?,
                    )),
                    _ => On::Docker(docker),
                }
            }
        };
        Ok(Runner { on })
    }

    /// Whether nap's router routes to its instances: on every runner but
    /// Kubernetes, whose Service does.
    pub fn behind_router(&self) -> bool {
        !matches!(self.on, On::Kubernetes(_))
    }

    /// What `ps` calls where an instance runs: `CONTAINER`, `UNIT`, `POD`
    /// or `TASK`.
    pub fn instance_column(&self) -> &'static str {
        match &self.on {
            On::Docker(_) => "CONTAINER",
            On::Systemd(_) => "UNIT",
            On::Kubernetes(_) => "POD",
            On::Swarm(_) => "TASK",
        }
    }

    /// The systemd unit `instance` of `app` runs as, under systemd.
    pub fn instance_unit(&self, app: &str, instance: &Instance) -> Option<String> {
        match &self.on {
            On::Systemd(_) => Some(instance.id().unit(app)),
            On::Docker(_) | On::Kubernetes(_) | On::Swarm(_) => None,
        }
    }

    /// How `ps` names `instance`: `web.1`, or on Kubernetes its process
    /// type (the cluster numbers its pods itself).
    pub fn instance_label(&self, instance: &Instance) -> String {
        match &self.on {
            On::Kubernetes(_) => instance.process.to_string(),
            On::Docker(_) | On::Systemd(_) | On::Swarm(_) => instance.id().name(),
        }
    }

    /// Whether a scale applies the release's workloads again with new
    /// counts (a cluster, a swarm), rather than starting and retiring
    /// instances one by one.
    pub fn scales_in_place(&self) -> bool {
        matches!(self.on, On::Kubernetes(_) | On::Swarm(_))
    }

    /// Restarts the serving release where the runner does that itself (a
    /// cluster: a rollout restart of its workloads); `false` where nap
    /// starts it afresh as a new start of the release.
    pub async fn restart_itself(&self, serving: Serving<'_>, progress: Progress<'_>) -> Result<bool, RunError> {
        match &self.on {
            On::Kubernetes(cluster) => cluster.restart(serving, progress).await.map(|()| true),
            On::Docker(_) | On::Systemd(_) | On::Swarm(_) => Ok(false),
        }
    }

    /// Whether nap starts again an instance that was killed (the docker
    /// runner; systemd restarts its units, a swarm or cluster its tasks).
    pub fn restarts_killed_instances(&self) -> bool {
        matches!(self.on, On::Docker(_))
    }

    /// The swarm runner, for what only a swarm has (its task list).
    pub fn swarm(&self) -> Option<&SwarmRunner> {
        match &self.on {
            On::Swarm(swarm) => Some(swarm),
            On::Docker(_) | On::Systemd(_) | On::Kubernetes(_) => None,
        }
    }

    /// The app's output as one stream where the runner merges it itself (a
    /// cluster's, each line prefixed with its pod); `None` where each
    /// instance's is read ([`Self::instance_output`]).
    pub fn app_output(
        &self,
        app: &str,
        tail: Option<u64>,
        follow: bool,
    ) -> Option<BoxStream<'static, Result<bytes::Bytes, RunError>>> {
        match &self.on {
            On::Kubernetes(cluster) => Some(cluster.logs(app, tail, follow).boxed()),
            On::Docker(_) | On::Systemd(_) | On::Swarm(_) => None,
        }
    }

    /// `instance`'s output with Docker's timestamps: the last `tail` lines
    /// since `since` (unix seconds), then with `follow` what comes.
    pub fn instance_output(
        &self,
        instance: &Instance,
        tail: Option<u64>,
        follow: bool,
        since: Option<i64>,
    ) -> BoxStream<'static, Result<bytes::Bytes, RunError>> {
        match &self.on {
            On::Docker(docker) => docker.timed_logs(&instance.name, tail, follow, since).boxed(),
            On::Systemd(systemd) => systemd.docker().timed_logs(&instance.name, tail, follow, since).boxed(),
            On::Swarm(swarm) => {
                // `nap-APP-TYPE.SLOT.TASK`: the task is the last part.
                let task = instance.name.rsplit('.').next().unwrap_or_default();
                swarm.timed_logs(task, tail, follow, since).boxed()
            }
            On::Kubernetes(_) => futures_util::stream::empty().boxed(),
        }
    }

    /// Runs the release phase `job`, its output line by line to `output`;
    /// its exit code, or `None` when it took over `timeout`.
    pub async fn release_phase(&self, job: &OneOff<'_>, timeout: Duration, output: Progress<'_>) -> Ended {
        match &self.on {
            On::Docker(docker) => docker.release_phase(job, timeout, output).await,
            On::Systemd(systemd) => systemd.docker().release_phase(job, timeout, output).await,
            On::Kubernetes(cluster) => cluster.release_phase(job, timeout, output).await,
            On::Swarm(_) => Err(SwarmError::Unsupported("the release phase").into()),
        }
    }

    /// Whether a one-off gets the client's terminal (a container does; a
    /// pod through `kubectl attach` does not).
    pub fn gives_terminal(&self) -> bool {
        matches!(self.on, On::Docker(_) | On::Systemd(_))
    }

    /// Runs `job` attached to `client` (`run`); its exit code, or `None`
    /// when the client went first. A pod may run for `timeout` at most.
    pub async fn run_attached(&self, job: &OneOff<'_>, timeout: Duration, client: Client<'_>) -> Ended {
        match &self.on {
            On::Docker(docker) => docker.run_attached(job, client).await,
            On::Systemd(systemd) => systemd.docker().run_attached(job, client).await,
            On::Kubernetes(cluster) => cluster.run_attached(job, timeout, client).await,
            On::Swarm(_) => Err(SwarmError::Unsupported("`run`").into()),
        }
    }

    /// This host's Docker runner, which runs the instances of the docker
    /// and systemd runners; none on Kubernetes or a swarm.
    pub fn host_docker(&self) -> Option<&DockerRunner> {
        match &self.on {
            On::Docker(docker) => Some(docker),
            On::Systemd(systemd) => Some(systemd.docker()),
            On::Kubernetes(_) | On::Swarm(_) => None,
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
        match &self.on {
            On::Docker(docker) => docker.ensure_network(network).await,
            On::Systemd(systemd) => systemd.docker().ensure_network(network).await,
            On::Kubernetes(_) => Ok(()),
            On::Swarm(swarm) => swarm.ensure_network(network).await,
        }
    }

    /// Removes the app's own network (`apps destroy`), once nothing of the
    /// app runs on it.
    pub async fn remove_network(&self, network: &AppNetwork) -> Result<(), RunError> {
        match &self.on {
            On::Docker(docker) => docker.remove_network(&network.name).await,
            On::Systemd(systemd) => systemd.docker().remove_network(&network.name).await,
            On::Kubernetes(cluster) => cluster.remove_network(&network.name).await,
            On::Swarm(swarm) => Ok(swarm.remove_network(&network.name).await?),
        }
    }

    /// The formation this runner runs when neither `ps scale` nor app.json
    /// says: on Kubernetes, `k8s_replicas` web pods.
    pub fn default_formation(&self) -> Formation {
        let mut formation = Formation::default();
        if let On::Kubernetes(cluster) = &self.on {
            formation.set(ProcessType::web(), cluster.settings().replicas);
        }
        formation
    }

    pub fn kind(&self) -> RunnerKind {
        match &self.on {
            On::Docker(_) => RunnerKind::Docker,
            On::Systemd(_) => RunnerKind::Systemd,
            On::Kubernetes(_) => RunnerKind::Kubernetes,
            On::Swarm(_) => RunnerKind::Swarm,
        }
    }

    /// What runs nap's releases, by app: containers, or pods on Kubernetes.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        match &self.on {
            On::Docker(docker) => docker.instances(app).await,
            On::Systemd(systemd) => systemd.docker().instances(app).await,
            On::Kubernetes(kubernetes) => kubernetes.instances(app).await,
            On::Swarm(swarm) => swarm.instances(app).await,
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
        if let On::Swarm(swarm) = &self.on {
            let placement = reqs.first().map_or(&[][..], |req| req.placement);
            // Boxed: a rollout's future is large, and every release flow holds this one.
            return Box::pin(swarm.start_formation(reqs, placement, progress)).await;
        }
        if let On::Kubernetes(cluster) = &self.on {
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
        match &self.on {
            On::Docker(docker) => docker.start(req, progress).await,
            On::Systemd(systemd) => systemd.start(req, progress).await,
            On::Kubernetes(kubernetes) => kubernetes.start(req, progress).await,
            On::Swarm(swarm) => {
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
        match &self.on {
            On::Docker(docker) => docker.remove(&id.container(app)).await,
            On::Systemd(systemd) => systemd.remove_instance(app, id).await,
            On::Kubernetes(kubernetes) => kubernetes.discard(app, id.release).await,
            On::Swarm(swarm) => {
                swarm.roll_back(app, &id.process).await;
                Ok(())
            }
        }
    }

    /// Retires every instance of `app` but those in `keep` (all of them
    /// when it is empty).
    pub async fn retire_all_but(&self, app: &str, keep: &[InstanceId]) -> Result<Vec<String>, RunError> {
        match &self.on {
            On::Docker(docker) => docker.retire_all_but(app, keep).await,
            On::Systemd(systemd) => systemd.retire_all_but(app, keep).await,
            On::Kubernetes(kubernetes) => kubernetes.retire_all_but(app, keep.first().map(|id| id.release)).await,
            // The swarm retired the previous release's tasks as it rolled
            // the new one out; what goes is the services of types not kept.
            On::Swarm(swarm) => {
                let kept: Vec<ProcessType> = keep.iter().map(|id| id.process.clone()).collect();
                Ok(swarm.remove_services(app, &kept).await?)
            }
        }
    }
}
