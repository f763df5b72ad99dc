//! The Docker Swarm runner: each process type of an app is one swarm
//! service (`nap-APP-TYPE`) with the formation's replicas, driven through a
//! manager's Engine API (bollard: ServiceCreate, ServiceUpdate with the
//! version index, TaskList). A release is one update of those services: the
//! swarm rolls it out start-first, watches it and rolls it back when a task
//! fails; nap waits until every task runs the release and answers, or
//! reports why not.
//!
//! Nothing here needs IPVS: there is no VIP and no routing mesh. Each web
//! task publishes `PORT` in host mode on a port its node picks, and nap's
//! router reaches it at the node's address and that port, as the task list
//! says ([`SwarmRunner::routed`]).
//!
//! Each app's tasks join an overlay network of the app's own, `nap-APP`
//! (attachable, its subnet the swarm's pick), where they reach each other
//! and no other app's tasks.

pub mod placement;
pub mod spec;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{NetworkCreateRequest, ServiceSpec, Task, TaskState};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions, LogsOptionsBuilder,
    UpdateServiceOptions,
};
use futures_util::StreamExt;
use tracing::{info, warn};

pub use placement::{Constraint, ConstraintError};
pub use spec::{Rollout, service_name};

use crate::check;
use crate::error::{CheckFailed, RunError, SwarmError};
use crate::labels;
use crate::network::AppNetwork;
use crate::process::ProcessType;
use crate::release::{Instance, InstanceId, Progress, RunRequest, Running};

/// How often a rollout is looked at: each look is three calls to the
/// manager, which has the rollout itself to run.
const POLL: Duration = Duration::from_millis(500);
/// Lines of a failed task's output shown with the error.
const LOG_TAIL: &str = "15";

/// Where the swarm is and how nap uses it (nap.toml's `swarm_*`).
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    /// A manager's Engine API: `unix:///var/run/docker.sock`, or
    /// `tcp://HOST:2376` (with `cert_path`, over TLS).
    pub host: String,
    /// A directory with `ca.pem`, `cert.pem` and `key.pem`, as
    /// `DOCKER_CERT_PATH` holds them, for `tcp://`.
    pub cert_path: Option<PathBuf>,
    /// The overlay network every app's tasks joined before each app had
    /// its own; removed once no service uses it.
    pub network: String,
    pub rollout: Rollout,
    /// How long a rollout may take before nap gives up and rolls it back.
    pub timeout: Duration,
    /// How long a new web task has to answer nap's own check.
    pub check_timeout: Duration,
    /// The registry's credentials, sent with each service update so that
    /// every node can pull (the CLI's `--with-registry-auth`).
    pub registry_auth: Option<RegistryAuth>,
}

/// Registry credentials; never printed.
#[derive(Clone)]
pub struct RegistryAuth(pub bollard::auth::DockerCredentials);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryAuth(********)")
    }
}

pub struct SwarmRunner {
    docker: Docker,
    settings: SwarmSettings,
    /// The nodes' addresses, as last read, and when.
    nodes: tokio::sync::Mutex<(Option<Instant>, HashMap<String, IpAddr>)>,
}

/// How long the nodes' addresses are taken as read (a task on a node not
/// among them reads them again at once).
const NODES_FOR: Duration = Duration::from_secs(5);

/// One task of one of nap's services, as nap reads it.
#[derive(Debug, Clone)]
pub struct SwarmTask {
    pub app: String,
    pub id: InstanceId,
    pub task: String,
    /// `nap-APP-TYPE.SLOT.TASK`, as the swarm names its container.
    pub name: String,
    pub node: String,
    pub state: String,
    pub wanted_running: bool,
    pub running: bool,
    pub image: String,
    /// Where the router reaches it: its node's address and published port.
    pub address: Option<SocketAddr>,
    pub since: Option<String>,
    /// Why it failed or was rejected.
    pub err: Option<String>,
    /// What the swarm says it is doing with it (`pulling image`, ...).
    pub message: Option<String>,
    /// When the swarm made it.
    pub created: Option<time::OffsetDateTime>,
}

/// A web task the router may route to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedTask {
    pub app: String,
    pub name: String,
    pub release: u32,
    pub address: SocketAddr,
}

impl SwarmRunner {
    /// Connects to the manager at `settings.host` and checks that it is one.
    pub async fn connect(settings: SwarmSettings) -> Result<SwarmRunner, SwarmError> {
        let host = settings.host.clone();
        let connect = |source| SwarmError::Connect { host: host.clone(), source };
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(&host, 120, version)
        } else if host.starts_with("tcp://") || host.starts_with("https://") {
            match &settings.cert_path {
                Some(dir) => Docker::connect_with_ssl(
                    &host.replacen("https://", "tcp://", 1),
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    120,
                    version,
                ),
                None => Docker::connect_with_http(&host, 120, version),
            }
        } else {
            return Err(SwarmError::BadHost(host));
        }
        .map_err(connect)?;
        let docker = docker.negotiate_version().await.map_err(connect)?;
        let info = docker.info().await.map_err(connect)?;
        if !info.swarm.and_then(|swarm| swarm.control_available).unwrap_or(false) {
            return Err(SwarmError::NotManager(host));
        }
        Ok(SwarmRunner { docker, settings, nodes: tokio::sync::Mutex::default() })
    }

    pub fn settings(&self) -> &SwarmSettings {
        &self.settings
    }

    fn credentials(&self) -> Option<bollard::auth::DockerCredentials> {
        self.settings.registry_auth.as_ref().map(|auth| auth.0.clone())
    }

    /// The app's overlay network, made the first time (attachable, so that
    /// a one-off container, or a service's, can join it). Refuses a network
    /// of that name that is not the app's.
    pub async fn ensure_network(&self, network: &AppNetwork) -> Result<(), RunError> {
        let name = &network.name;
        match self.docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
            Ok(found) if network.owns(found.labels.as_ref()) => return Ok(()),
            Ok(_) => return Err(RunError::NetworkNotOurs { network: name.clone() }),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(err) => return Err(SwarmError::from(err).into()),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(network.labels()),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(request).await {
            // 409: another deploy made it in between.
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(err) => Err(SwarmError::from(err).into()),
        }
    }

    /// Removes overlay network `name` if it exists. The swarm refuses while
    /// a service uses it, and for a while after its tasks stop: tried again
    /// for up to ten seconds.
    pub async fn remove_network(&self, name: &str) -> Result<(), SwarmError> {
        // The swarm refuses while the removed services' tasks still stop:
        // up to 30 s.
        let mut tries = 60;
        loop {
            match self.docker.remove_network(name).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    return Ok(());
                }
                Err(_) if tries > 1 => tries -= 1,
                Err(err) => return Err(err.into()),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Removes the overlay every app's tasks shared before each app had its
    /// own, once no service uses it (the swarm refuses before: left alone).
    async fn remove_shared_network_if_unused(&self) {
        let name = &self.settings.network;
        let Ok(found) =
            self.docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await
        else {
            return;
        };
        if found.labels.unwrap_or_default().get(labels::NETWORK).map(String::as_str) != Some("swarm") {
            return;
        }
        match self.docker.remove_network(name).await {
            Ok(()) => info!(network = %name, "removed the shared overlay: every app runs on its own"),
            Err(err) => tracing::debug!(network = %name, error = %err, "the shared overlay stays"),
        }
    }

    /// Runs `reqs` (the instances of one start of one release, every type)
    /// as the app's services, one per type with as many replicas as it has
    /// requests, placed by `constraints`, the types side by side; waits
    /// until every task runs the release and its web tasks answer. Answers
    /// every task (web ones at their node and port). When a service does
    /// not converge, every one goes back (a new one is removed) and the
    /// error says why.
    pub async fn start_formation(
        &self,
        reqs: &[RunRequest<'_>],
        constraints: &[String],
        progress: Progress<'_>,
    ) -> Result<Vec<(InstanceId, Running)>, RunError> {
        let Some(first) = reqs.first() else { return Ok(Vec::new()) };
        self.ensure_network(first.network).await?;
        let mut types: Vec<(&RunRequest<'_>, u32)> = Vec::new();
        for req in reqs {
            match types.iter_mut().find(|(seen, _)| seen.id.process == req.id.process) {
                Some((_, count)) => *count += 1,
                None => types.push((req, 1)),
            }
        }
        let rollouts = types.iter().map(|(req, replicas)| {
            let spec = spec::service(req, *replicas, &req.network.name, constraints, self.settings.rollout);
            self.roll_out(spec, req, *replicas, progress)
        });
        let rolled = futures_util::future::join_all(rollouts).await;
        let mut started = Vec::new();
        let mut failure = None;
        for (req, result) in types.iter().map(|(req, _)| req).zip(rolled) {
            match result {
                Ok(tasks) => started.push((req, tasks)),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        if let Some(err) = failure {
            // What did converge goes back too: the release runs whole or not at all.
            for (req, (_, created)) in &started {
                self.take_back(&service_name(req.app, req.id.process.as_str()), *created).await;
            }
            return Err(err);
        }
        let started = started.into_iter().flat_map(|(_, (tasks, _))| tasks);
        // Types the formation no longer runs.
        let kept: Vec<ProcessType> = types.iter().map(|(req, _)| req.id.process.clone()).collect();
        for gone in self.remove_services(first.app, &kept).await? {
            progress(&format!("Removed service {gone}"));
        }
        // The last service of the shared overlay's time may just have moved.
        self.remove_shared_network_if_unused().await;
        Ok(started
            .into_iter()
            .map(|task| {
                let running = match task.address.filter(|_| task.id.process.is_web()) {
                    Some(address) => Running::container(task.name.clone(), address),
                    None => Running::unrouted(task.name.clone(), IpAddr::from([0, 0, 0, 0])),
                };
                (task.id, running)
            })
            .collect())
    }

    /// Creates or updates one service and waits until it converged;
    /// answers its tasks and whether it was created. A service that does
    /// not converge goes back first.
    async fn roll_out(
        &self,
        spec: ServiceSpec,
        req: &RunRequest<'_>,
        replicas: u32,
        progress: Progress<'_>,
    ) -> Result<(Vec<SwarmTask>, bool), RunError> {
        let name = spec.name.clone().unwrap_or_default();
        let created = match self.docker.inspect_service(&name, None::<InspectServiceOptions>).await {
            Ok(current) => {
                let version = current.version.and_then(|v| v.index).unwrap_or_default();
                let options = UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..UpdateServiceOptions::default()
                };
                progress(&format!("Updating service {name} to v{} ({replicas} tasks, start-first)", req.id.release));
                self.docker.update_service(&name, spec, options, self.credentials()).await.map_err(SwarmError::from)?;
                false
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                progress(&format!("Creating service {name} ({replicas} tasks)"));
                self.docker.create_service(spec, self.credentials()).await.map_err(SwarmError::from)?;
                true
            }
            Err(err) => return Err(SwarmError::from(err).into()),
        };
        let outcome = match self.converge(&name, req, replicas, created, progress).await {
            Ok(tasks) => self.check_web(&name, req, tasks, progress).await,
            Err(err) => Err(err),
        };
        if outcome.is_err() {
            self.take_back(&name, created).await;
        }
        outcome.map(|tasks| (tasks, created))
    }

    /// After a failed rollout: a new service goes; an updated one goes
    /// back to its previous spec, unless the swarm did that already.
    async fn take_back(&self, name: &str, created: bool) {
        use bollard::models::ServiceUpdateStatusStateEnum as State;
        if created {
            if let Err(err) = self.docker.delete_service(name).await {
                warn!(service = name, error = %err, "could not remove a service that failed");
            }
            return;
        }
        let Ok(current) = self.docker.inspect_service(name, None::<InspectServiceOptions>).await else { return };
        let state = current.update_status.as_ref().and_then(|status| status.state);
        if matches!(state, Some(State::ROLLBACK_STARTED | State::ROLLBACK_COMPLETED | State::ROLLBACK_PAUSED)) {
            return;
        }
        let options = UpdateServiceOptions {
            version: i32::try_from(current.version.and_then(|v| v.index).unwrap_or_default()).unwrap_or(i32::MAX),
            rollback: Some("previous".into()),
            ..UpdateServiceOptions::default()
        };
        let spec = current.spec.unwrap_or_default();
        if let Err(err) = self.docker.update_service(name, spec, options, self.credentials()).await {
            warn!(service = name, error = %err, "could not roll a failed update back");
        } else {
            info!(service = name, "rolled a failed update back");
        }
    }

    /// Waits until `replicas` tasks of `req`'s start run, no other task of
    /// the service is wanted, and the swarm says the update is done; or says
    /// why it failed (after the swarm's own rollback has ended).
    async fn converge(
        &self,
        name: &str,
        req: &RunRequest<'_>,
        replicas: u32,
        created: bool,
        progress: Progress<'_>,
    ) -> Result<Vec<SwarmTask>, RunError> {
        use bollard::models::ServiceUpdateStatusStateEnum as State;
        let deadline = Instant::now() + self.settings.timeout;
        let ours = |task: &SwarmTask| task.id.same_start(&req.id);
        let mut said = String::new();
        loop {
            let service =
                self.docker.inspect_service(name, None::<InspectServiceOptions>).await.map_err(SwarmError::from)?;
            let status = service.update_status.unwrap_or_default();
            // The spec this rollout made: tasks from before it (an earlier
            // attempt of the same start that failed) are not its to judge.
            let since = service.updated_at.as_deref().and_then(rfc3339);
            let tasks = self.tasks_where("service", name).await?;
            // A node that cannot pull, or a task that fails: said at once on
            // a new service; an update's failure is the swarm's to roll back.
            let failed = tasks.iter().find(|task| {
                ours(task) && task.err.is_some() && !task.running && task.created.zip(since).is_none_or(|(t, s)| t >= s)
            });
            if let Some(task) = failed
                && (created || is_lasting(task.err.as_deref().unwrap_or_default()))
            {
                return Err(self.failure(name, task).await.into());
            }
            match status.state {
                Some(State::ROLLBACK_COMPLETED | State::ROLLBACK_PAUSED | State::PAUSED) => {
                    let reason = status.message.unwrap_or_else(|| "the update failed".into());
                    let task = tasks.iter().find(|task| ours(task) && task.err.is_some());
                    let (why, log_tail) = match task {
                        Some(task) => {
                            (self.failure(name, task).await.to_string(), self.task_log_tail(&task.task).await)
                        }
                        None => (reason.clone(), Vec::new()),
                    };
                    return Err(SwarmError::RolledBack { service: name.to_owned(), reason, why, log_tail }.into());
                }
                Some(State::ROLLBACK_STARTED) => progress(&format!("{name}: the swarm is rolling the update back")),
                _ => {}
            }
            let wanted: Vec<&SwarmTask> = tasks.iter().filter(|task| task.wanted_running).collect();
            let running = wanted.iter().filter(|task| ours(task) && task.running).count();
            let done = matches!(status.state, None | Some(State::COMPLETED | State::EMPTY));
            if running == replicas as usize && wanted.len() == running && done {
                return Ok(tasks.into_iter().filter(|task| ours(task) && task.wanted_running).collect());
            }
            let now = states(wanted.iter().copied().filter(|task| ours(task)));
            if now != said {
                progress(&format!("{name}: {running} of {replicas} tasks run v{}: {now}", req.id.release));
                said = now;
            }
            if Instant::now() >= deadline {
                return Err(SwarmError::Timeout {
                    service: name.to_owned(),
                    seconds: self.settings.timeout.as_secs(),
                    running,
                    replicas,
                    release: req.id.release,
                    states: states(tasks.iter().filter(|task| ours(task) && task.wanted_running)),
                }
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// nap's own check of each new web task, at its node's port: app.json's
    /// check, or any HTTP answer.
    async fn check_web(
        &self,
        name: &str,
        req: &RunRequest<'_>,
        tasks: Vec<SwarmTask>,
        progress: Progress<'_>,
    ) -> Result<Vec<SwarmTask>, RunError> {
        if !req.id.process.is_web() {
            return Ok(tasks);
        }
        for task in &tasks {
            let Some(address) = task.address else {
                return Err(SwarmError::NoPort { service: name.to_owned(), task: task.name.clone() }.into());
            };
            let answered = match req.check.filter(|check| check.decides_start()) {
                Some(check) => {
                    let host = address.ip().to_string();
                    check::until_healthy(check, &host, || async { Ok(Some(address)) }).await?.map(|_| ())
                }
                None => check::until_answering(self.settings.check_timeout, || async { Ok(Some(address)) })
                    .await?
                    .map(|_| ())
                    .ok_or(CheckFailed::NoAnswer { seconds: self.settings.check_timeout.as_secs() }),
            };
            if let Err(why) = answered {
                let log_tail = self.task_log_tail(&task.task).await;
                return Err(SwarmError::NotAnswering { task: task.name.clone(), address, why, log_tail }.into());
            }
        }
        progress(&format!("{name}: every task answers"));
        Ok(tasks)
    }

    /// What went wrong with `task`, in one line naming its node.
    async fn failure(&self, service: &str, task: &SwarmTask) -> SwarmError {
        let reason = task.err.clone().unwrap_or_else(|| task.state.clone());
        if is_pull_error(&reason) {
            return SwarmError::Pull { node: task.node.clone(), image: task.image.clone(), reason };
        }
        if reason.contains("no suitable node") {
            return SwarmError::Unplaceable { service: service.to_owned(), reason };
        }
        SwarmError::TaskFailed {
            service: service.to_owned(),
            task: task.name.clone(),
            node: task.node.clone(),
            reason,
            log_tail: self.task_log_tail(&task.task).await,
        }
    }

    /// The last lines a task wrote, if its node can still say.
    pub async fn task_log_tail(&self, task: &str) -> Vec<String> {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(LOG_TAIL).build();
        let mut stream = self.docker.task_logs(task, Some(options));
        let mut text = String::new();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        text.lines().map(str::to_owned).collect()
    }

    /// The output of one task, as Docker's logs with timestamps.
    pub fn timed_logs(
        &self,
        task: &str,
        tail: Option<u64>,
        follow: bool,
        since: Option<i64>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, RunError>> + use<> {
        self.docker
            .task_logs(task, Some(crate::docker::timed_logs_options(tail, follow, since)))
            .map(|item| item.map(bollard::container::LogOutput::into_bytes).map_err(|err| SwarmError::from(err).into()))
    }

    /// Each node's address, by node ID.
    async fn node_addresses(&self) -> Result<HashMap<String, IpAddr>, SwarmError> {
        let nodes = self.docker.list_nodes(None::<ListNodesOptions>).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|node| {
                let status = node.status.and_then(|status| status.addr).and_then(|addr| addr.parse::<IpAddr>().ok());
                // A manager may report 0.0.0.0; its manager address says more.
                let manager = node
                    .manager_status
                    .and_then(|manager| manager.addr)
                    .and_then(|addr| addr.parse::<SocketAddr>().ok())
                    .map(|addr| addr.ip());
                let address = status.filter(|ip| !ip.is_unspecified()).or(manager)?;
                Some((node.id?, address))
            })
            .collect())
    }

    /// The tasks of nap's services matching `filter=value`.
    async fn tasks_where(&self, filter: &str, value: &str) -> Result<Vec<SwarmTask>, SwarmError> {
        let filters = HashMap::from([(filter.to_owned(), vec![value.to_owned()])]);
        let tasks = self.docker.list_tasks(Some(ListTasksOptions { filters: Some(filters) })).await?;
        let mut nodes = self.nodes.lock().await;
        let known = |nodes: &HashMap<String, IpAddr>| {
            tasks.iter().filter_map(|task| task.node_id.as_ref()).all(|node| nodes.contains_key(node))
        };
        if nodes.0.is_none_or(|read| read.elapsed() >= NODES_FOR) || !known(&nodes.1) {
            *nodes = (Some(Instant::now()), self.node_addresses().await?);
        }
        Ok(tasks.iter().filter_map(|task| read_task(task, &nodes.1)).collect())
    }

    /// Every task of `app`'s services (every app's, for `None`).
    pub async fn tasks(&self, app: Option<&str>) -> Result<Vec<SwarmTask>, SwarmError> {
        let label = match app {
            Some(app) => format!("{}={app}", labels::APP),
            None => labels::APP.to_owned(),
        };
        self.tasks_where("label", &label).await
    }

    /// What runs nap's releases, by app: the tasks the swarm wants running.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        let mut by_app: HashMap<String, Vec<Instance>> = HashMap::new();
        for task in self.tasks(app).await? {
            if !task.wanted_running {
                continue;
            }
            by_app.entry(task.app.clone()).or_default().push(Instance {
                name: task.name.clone(),
                release: task.id.release,
                restarts: task.id.restarts,
                process: task.id.process.clone(),
                index: task.id.index,
                crashes: 0,
                state: task.state.clone(),
                started_at: task.running.then(|| task.since.clone()).flatten(),
                address: task.address.map(|address| address.to_string()),
            });
        }
        Ok(by_app)
    }

    /// The web tasks the router may route to: running, wanted running, and
    /// with a published port.
    pub async fn routed(&self) -> Result<Vec<RoutedTask>, SwarmError> {
        Ok(self
            .tasks(None)
            .await?
            .into_iter()
            .filter(|task| task.id.process.is_web() && task.running && task.wanted_running)
            .filter_map(|task| {
                Some(RoutedTask { address: task.address?, app: task.app, name: task.name, release: task.id.release })
            })
            .collect())
    }

    /// Removes `app`'s services but those of the types in `keep` (all of
    /// them when it is empty); answers their names.
    pub async fn remove_services(&self, app: &str, keep: &[ProcessType]) -> Result<Vec<String>, SwarmError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={app}", labels::APP)])]);
        let options = ListServicesOptions { filters: Some(filters), status: None };
        let mut removed = Vec::new();
        for service in self.docker.list_services(Some(options)).await? {
            let spec = service.spec.unwrap_or_default();
            let name = spec.name.clone().unwrap_or_default();
            let kind = spec.labels.as_ref().and_then(|labels| labels.get(labels::PROCESS)).cloned();
            if kind.is_some_and(|kind| keep.iter().any(|kept| kept.as_str() == kind)) {
                continue;
            }
            match self.docker.delete_service(&name).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                    removed.push(name);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(removed)
    }

    /// Rolls `app`'s services back to their previous spec (a release that
    /// could not be recorded must not run).
    pub async fn roll_back(&self, app: &str, process: &ProcessType) {
        self.take_back(&service_name(app, process.as_str()), false).await;
    }
}

/// `2 starting, 1 pending (no suitable node ...)`: what tasks are doing.
fn states<'a>(tasks: impl Iterator<Item = &'a SwarmTask>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for task in tasks {
        let why = task.err.as_ref().or(task.message.as_ref());
        let state = match why {
            Some(why) => format!("{} ({why})", task.state),
            None => task.state.clone(),
        };
        match counts.iter_mut().find(|(seen, _)| *seen == state) {
            Some((_, count)) => *count += 1,
            None => counts.push((state, 1)),
        }
    }
    let said: Vec<String> = counts.into_iter().map(|(state, count)| format!("{count} {state}")).collect();
    if said.is_empty() { "none started".into() } else { said.join(", ") }
}

fn rfc3339(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Whether a task's error says its node could not get the image.
fn is_pull_error(err: &str) -> bool {
    err.contains("No such image") || err.contains("pull access denied") || err.contains("manifest unknown")
}

/// Whether a task's error will not go away by itself during an update (the
/// swarm would wait on it until nap's timeout): no node can pull the image,
/// or none may run the task.
fn is_lasting(err: &str) -> bool {
    is_pull_error(err) || err.contains("no suitable node")
}

/// One task as nap reads it; `None` for a task of none of nap's services.
fn read_task(task: &Task, nodes: &HashMap<String, IpAddr>) -> Option<SwarmTask> {
    let container = task.spec.as_ref()?.container_spec.as_ref()?;
    let labels = container.labels.clone().unwrap_or_default();
    let app = labels.get(labels::APP)?.clone();
    let slot = u32::try_from(task.slot.unwrap_or(1)).unwrap_or(1);
    let mut labels = labels;
    labels.insert(labels::INDEX.to_owned(), slot.to_string());
    let id = InstanceId::of_labels(&labels)?;
    let task_id = task.id.clone()?;
    let status = task.status.clone().unwrap_or_default();
    let node = task.node_id.clone().unwrap_or_default();
    let published = status
        .port_status
        .as_ref()
        .and_then(|ports| ports.ports.as_ref())
        .and_then(|ports| ports.iter().find_map(|port| port.published_port))
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0);
    let address = match (nodes.get(&node), published) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(*ip, port)),
        _ => None,
    };
    let state = status.state.unwrap_or(TaskState::NEW);
    Some(SwarmTask {
        name: format!("{}.{slot}.{task_id}", service_name(&app, id.process.as_str())),
        app,
        id,
        task: task_id,
        node,
        state: state.to_string(),
        wanted_running: task.desired_state == Some(TaskState::RUNNING),
        running: state == TaskState::RUNNING,
        image: container.image.clone().unwrap_or_default(),
        address,
        since: status.timestamp.clone(),
        err: status.err.filter(|err| !err.is_empty()),
        message: status.message.filter(|message| !message.is_empty()),
        created: task.created_at.as_deref().and_then(rfc3339),
    })
}
