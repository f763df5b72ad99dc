//! The Docker runner: one container per instance, named
//! `nap-APP-vN-TYPE.I` (see [`InstanceId::container`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::check::{until_answering, until_healthy};
use crate::error::RunError;
use crate::labels;
use crate::release::{Instance, InstanceId, Progress, RunRequest, Running};

pub mod network;
pub mod one_off;
pub mod sockets;
use crate::network::AppNetwork;

const LOG_TAIL: usize = 15;
/// Addresses tried before a start gives up on finding a free one.
const ADDRESS_ATTEMPTS: u32 = 3;
/// How long a retired release gets to stop before it is killed.
const STOP_GRACE_SECS: i32 = 10;
/// How long an instance of a type without traffic must keep running to
/// count as started.
pub(crate) const START_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct DockerRunner {
    pub(crate) docker: Docker,
    /// The network every app shared before each had its own.
    shared: AppNetwork,
    check_timeout: Duration,
}

impl DockerRunner {
    /// A runner on `docker`; `shared` is the network every app shared
    /// before each had its own, where instances of such an installation
    /// run until their app's next release.
    pub fn new(docker: Docker, shared: AppNetwork, check_timeout: Duration) -> Self {
        DockerRunner { docker, shared, check_timeout }
    }

    /// The runner on this host's Docker daemon, connected now.
    pub async fn connect(shared: AppNetwork, check_timeout: Duration) -> Result<Self, RunError> {
        Ok(DockerRunner::new(connect().await?, shared, check_timeout))
    }

    /// The network every app shared before each had its own.
    pub fn shared_network(&self) -> &AppNetwork {
        &self.shared
    }

    /// Starts the instance and waits until it is ready: a `web` instance
    /// until it answers on its app's network, another until it has run for
    /// the start window. It publishes no host port: routers reach it at its
    /// address there. On failure the new container is removed and whatever
    /// ran before is untouched.
    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        let name = req.id.container(req.app);
        self.ensure_network(req.network).await?;
        // A push killed between create and record can leave a container of the
        // same name; it never served, so it goes.
        self.remove(&name).await?;
        let web = req.id.process.is_web();
        let mut env: Vec<String> = web.then(|| format!("PORT={}", req.port)).into_iter().collect();
        env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
        progress(&format!("Starting {name}"));
        let mut attempt = 0;
        let started = loop {
            attempt += 1;
            self.create(req, &name, self.free_address(req.network).await?, env.clone()).await?;
            match self.docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await {
                Err(err) if attempt < ADDRESS_ATTEMPTS && is_address_taken(&err) => {
                    warn!(container = %name, "its address was taken meanwhile; picking another");
                    self.remove(&name).await?;
                }
                Err(err) => break Err(err.into()),
                Ok(()) if !web => break self.wait_until_settled(&name, &req.network.name, progress).await,
                Ok(()) => {
                    break self
                        .wait_until_ready(req, &name, progress)
                        .await
                        .map(|a| Running::container(name.clone(), a));
                }
            }
        };
        match started {
            Ok(running) => {
                info!(container = %running.name, url = %running.url, "instance ready");
                Ok(running)
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&name).await {
                    warn!(container = %name, error = %cleanup, "could not remove the failed release's container");
                }
                Err(err)
            }
        }
    }

    async fn create(&self, req: &RunRequest<'_>, name: &str, ip: Ipv4Addr, env: Vec<String>) -> Result<(), RunError> {
        let body = ContainerCreateBody {
            image: Some(req.image.to_owned()),
            cmd: req.command.clone(),
            env: Some(env),
            exposed_ports: req.id.process.is_web().then(|| vec![format!("{}/tcp", req.port)]),
            hostname: Some(req.id.name().replace('.', "-")),
            labels: Some(req.labels()),
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Self::host_config(req.limits, &req.network.name)
            }),
            networking_config: Some(req.network.at(ip)),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker.create_container(Some(options), body).await?;
        Ok(())
    }

    /// What every container nap runs gets: its app's network, an init,
    /// and the app's limits.
    pub(crate) fn host_config(limits: crate::Limits, network: &str) -> HostConfig {
        HostConfig {
            network_mode: Some(network.to_owned()),
            init: Some(true),
            memory: limits.memory.and_then(|m| i64::try_from(m.0).ok()),
            memory_swap: limits.memory.and_then(|m| i64::try_from(m.0).ok()),
            nano_cpus: limits.cpus.map(|c| i64::from(c.millis()) * 1_000_000),
            pids_limit: limits.pids.map(i64::from),
            ..Default::default()
        }
    }

    /// Waits until a `web` instance is ready: by the app's health check,
    /// or else until it answers HTTP on `PORT` at all.
    pub(crate) async fn wait_until_ready(
        &self,
        req: &RunRequest<'_>,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<SocketAddr, RunError> {
        let Some(check) = req.check else { return self.wait_until_answering(name, req.port, progress).await };
        progress(&format!("Checking {name}: {}", check.describe()));
        match until_healthy(check, req.app, || self.address(name, req.port)).await? {
            Ok(address) => Ok(address),
            Err(failed) => Err(RunError::Unhealthy {
                container: name.to_owned(),
                attempts: check.attempts(),
                failed,
                log_tail: self.log_tail(name).await,
            }),
        }
    }

    /// Waits out the start window of an instance that takes no traffic: it
    /// is started if it still runs then.
    pub(crate) async fn wait_until_settled(
        &self,
        name: &str,
        network: &str,
        progress: Progress<'_>,
    ) -> Result<Running, RunError> {
        progress(&format!("Waiting {} s for {name} to keep running", START_WINDOW.as_secs()));
        tokio::time::sleep(START_WINDOW).await;
        match self.address(name, 0).await? {
            Some(address) => Ok(Running::unrouted(name.to_owned(), address.ip())),
            None => Err(RunError::NoAddress { container: name.to_owned(), network: network.to_owned() }),
        }
    }

    /// Polls until the container answers HTTP on `port` at its address on
    /// its network, and answers that address. Fails as soon as the
    /// container stops.
    pub(crate) async fn wait_until_answering(
        &self,
        name: &str,
        port: u16,
        progress: Progress<'_>,
    ) -> Result<SocketAddr, RunError> {
        progress(&format!("Waiting for {name} to answer HTTP on port {port}"));
        match until_answering(self.check_timeout, || self.address(name, port)).await? {
            Some(address) => Ok(address),
            None => Err(RunError::CheckTimeout {
                container: name.to_owned(),
                port,
                seconds: self.check_timeout.as_secs(),
                log_tail: self.log_tail(name).await,
                listening: self.listening_ports(name).await,
            }),
        }
    }

    /// Where the container listens (TCP); `None` when that cannot be
    /// seen (it stopped, or the daemon runs on another host).
    pub(crate) async fn listening_ports(&self, name: &str) -> Option<Vec<sockets::Listener>> {
        let inspect = self
            .docker
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .ok()?;
        let pid = inspect.state?.pid.filter(|pid| *pid > 0)?;
        sockets::listening_ports_of(pid)
    }

    /// The container's `IP:port` on its network (its app's, or for an
    /// instance from before app networks the shared one); `None` while it
    /// does not exist or has not started yet. An error once it stopped.
    pub(crate) async fn address(&self, name: &str, port: u16) -> Result<Option<SocketAddr>, RunError> {
        let inspect =
            match self.docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await
            {
                Ok(inspect) => inspect,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
        let state = inspect.state.unwrap_or_default();
        if state.status == Some(ContainerStateStatusEnum::CREATED) {
            return Ok(None);
        }
        // With restart=unless-stopped a crashing app is "restarting", not "exited".
        if state.running != Some(true) || state.restarting == Some(true) {
            return Err(RunError::Exited {
                container: name.to_owned(),
                exit_code: state.exit_code.unwrap_or_default(),
                log_tail: self.log_tail(name).await,
            });
        }
        let labels = inspect.config.and_then(|config| config.labels).unwrap_or_default();
        let network = self.network_of(&labels);
        let ip = inspect
            .network_settings
            .and_then(|settings| settings.networks?.remove(network)?.ip_address)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        match ip {
            Some(ip) => Ok(Some(SocketAddr::new(ip, port))),
            None => Err(RunError::NoAddress { container: name.to_owned(), network: network.to_owned() }),
        }
    }

    /// The container's last output lines; empty if they cannot be read.
    pub async fn log_tail(&self, name: &str) -> Vec<String> {
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&LOG_TAIL.to_string()).build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
            lines.extend(text.lines().map(str::to_owned));
        }
        let skip = lines.len().saturating_sub(LOG_TAIL);
        lines.split_off(skip)
    }

    /// Stops and removes every container of `app` but those of `keep`: the
    /// previous release (or start of this one) once the new one answers,
    /// instances scaled away, and leftovers of interrupted pushes. With
    /// `keep` empty, all of them. They stop side by side.
    pub async fn retire_all_but(&self, app: &str, keep: &[InstanceId]) -> Result<Vec<String>, RunError> {
        let filters = HashMap::from([("label", vec![format!("{}={app}", labels::APP)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let mut names = Vec::new();
        let mut off_the_shared_network = false;
        for container in self.docker.list_containers(Some(options)).await? {
            let Some(name) = container.names.and_then(|n| n.into_iter().next()) else { continue };
            let id = container.labels.as_ref().and_then(InstanceId::of_labels);
            if id.is_some_and(|id| keep.contains(&id)) {
                continue;
            }
            off_the_shared_network |= container.labels.as_ref().is_some_and(|l| !l.contains_key(labels::NETWORK));
            names.push(name.trim_start_matches('/').to_owned());
        }
        let retire = |name: String| async move {
            let stop = StopContainerOptionsBuilder::new().t(STOP_GRACE_SECS).build();
            if let Err(err) = self.docker.stop_container(&name, Some(stop)).await {
                warn!(container = %name, error = %err, "stop failed; removing anyway");
            }
            self.remove(&name).await.map(|()| name)
        };
        let retired = futures_util::future::join_all(names.into_iter().map(retire)).await.into_iter().collect();
        // An instance from before app networks went: it may have been the
        // shared network's last.
        if off_the_shared_network {
            self.remove_shared_network_if_empty().await;
        }
        retired
    }

    /// Removes a container if it exists.
    pub(crate) async fn remove(&self, name: &str) -> Result<(), RunError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// What Docker reports of one of nap's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub app: String,
    pub container: String,
    /// The instance it runs, as its labels say.
    pub instance: Option<InstanceId>,
    /// `true` when it (re)started, `false` when it died.
    pub started: bool,
}

impl DockerRunner {
    /// Starts and deaths of nap's containers on this host, as Docker
    /// reports them, from now until the stream is dropped.
    pub fn lifecycle(&self) -> impl futures_util::Stream<Item = Result<Lifecycle, RunError>> + use<> {
        let filters =
            HashMap::from([("type", vec!["container"]), ("label", vec![labels::APP]), ("event", vec!["start", "die"])]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new().filters(&filters).build();
        self.docker.events(Some(options)).filter_map(|event| async move {
            let event = match event {
                Ok(event) => event,
                Err(err) => return Some(Err(err.into())),
            };
            let started = match event.action.as_deref() {
                Some("start") => true,
                Some("die") => false,
                _ => return None,
            };
            let mut attributes = event.actor?.attributes?;
            let instance = InstanceId::of_labels(&attributes);
            let (app, container) = (attributes.remove(labels::APP)?, attributes.remove("name")?);
            Some(Ok(Lifecycle { app, container, instance, started }))
        })
    }

    /// Which `web` instance container `name` runs, and where it answers
    /// now: its address on its network and the port its label names;
    /// `None` unless it runs.
    pub async fn running_address(&self, name: &str) -> Result<Option<(InstanceId, SocketAddr)>, RunError> {
        let inspect =
            match self.docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await
            {
                Ok(inspect) => inspect,
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        let port = labels.get(labels::PORT).and_then(|port| port.parse::<u16>().ok());
        let (Some(id), Some(port)) = (InstanceId::of_labels(&labels), port) else { return Ok(None) };
        match self.address(name, port).await {
            Ok(address) => Ok(address.map(|address| (id, address))),
            Err(RunError::Exited { .. } | RunError::NoAddress { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Whether container `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, RunError> {
        match self.docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Starts a stopped instance again, as it was (same name, same
    /// address); answers `false` when it is gone or already runs.
    pub async fn start_again(&self, name: &str) -> Result<bool, RunError> {
        match self.docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Every container nap runs, by app. One Docker call, however many apps.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        let label = match app {
            Some(app) => format!("{}={app}", labels::APP),
            None => labels::APP.to_owned(),
        };
        let filters = HashMap::from([("label", vec![label])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let mut by_app: HashMap<String, Vec<Instance>> = HashMap::new();
        for container in self.docker.list_containers(Some(options)).await? {
            let labels = container.labels.unwrap_or_default();
            let (Some(app), Some(name)) = (labels.get(labels::APP), container.names.and_then(|n| n.into_iter().next()))
            else {
                continue;
            };
            let name = name.trim_start_matches('/').to_owned();
            // Docker counts the starts of its restart policy: the crashes.
            let inspect = self
                .docker
                .inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>)
                .await
                .ok();
            let crashes = inspect.as_ref().and_then(|i| i.restart_count).map_or(0, |n| u32::try_from(n).unwrap_or(0));
            let started_at = match container.state.as_ref().map(ToString::to_string).as_deref() {
                Some("running") => inspect.and_then(|i| i.state?.started_at),
                _ => None,
            };
            let id = InstanceId::of_labels(&labels).unwrap_or_else(|| InstanceId::web(0, 0));
            let network = self.network_of(&labels);
            let ip = container
                .network_settings
                .and_then(|settings| settings.networks?.remove(network)?.ip_address)
                .filter(|ip| !ip.is_empty());
            let port = labels.get(labels::PORT);
            by_app.entry(app.clone()).or_default().push(Instance {
                release: id.release,
                restarts: id.restarts,
                process: id.process,
                index: id.index,
                crashes,
                state: container.state.map_or_else(|| "unknown".into(), |s| s.to_string()),
                started_at,
                address: ip.zip(port).map(|(ip, port)| format!("{ip}:{port}")),
                name,
            });
        }
        Ok(by_app)
    }
}

/// This host's Docker daemon (`DOCKER_HOST`, else the local socket),
/// connected now, at the API version both speak.
pub async fn connect() -> Result<Docker, RunError> {
    Docker::connect_with_local_defaults()
        .map_err(RunError::DockerUnreachable)?
        .negotiate_version()
        .await
        .map_err(RunError::DockerUnreachable)
}

impl DockerRunner {
    /// The container's output with Docker's timestamp (RFC 3339, UTC) at
    /// the start of each line: the last `tail` lines since `since` (unix
    /// seconds), then (with `follow`) whatever it writes until the stream
    /// is dropped.
    pub fn timed_logs(
        &self,
        container: &str,
        tail: Option<u64>,
        follow: bool,
        since: Option<i64>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, RunError>> + use<> {
        self.docker
            .logs(container, Some(timed_logs_options(tail, follow, since)))
            .map(|item| item.map(bollard::container::LogOutput::into_bytes).map_err(RunError::from))
    }
}

/// Docker's log options for output with timestamps: the last `tail` lines
/// (all of them for `None`), since `since` (Unix seconds), and with
/// `follow` what comes after. A container's and a swarm task's alike.
pub(crate) fn timed_logs_options(
    tail: Option<u64>,
    follow: bool,
    since: Option<i64>,
) -> bollard::query_parameters::LogsOptions {
    let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
    let mut options = LogsOptionsBuilder::new().stdout(true).stderr(true).follow(follow).timestamps(true).tail(&tail);
    if let Some(since) = since.and_then(|since| i32::try_from(since).ok()) {
        options = options.since(since);
    }
    options.build()
}

fn is_address_taken(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.contains("already in use") || message.contains("already allocated"))
}
