//! The Docker runner: one container per release, named `nap-APP-vN`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::check::{free_host_port, until_answering};
use crate::error::RunError;
use crate::labels;
use crate::release::{Instance, Progress, RunRequest, Running, Serving};

pub mod network;
use network::AppNetwork;

const LOG_TAIL: usize = 15;
/// Host ports tried before a start gives up on finding a free one.
const PORT_ATTEMPTS: u32 = 3;
/// How long a retired release gets to stop before it is killed.
const STOP_GRACE_SECS: i32 = 10;

pub struct DockerRunner {
    pub(crate) docker: Docker,
    network: AppNetwork,
    /// The host name put in app URLs.
    public_host: String,
    check_timeout: Duration,
}

impl DockerRunner {
    pub fn new(docker: Docker, network: AppNetwork, public_host: String, check_timeout: Duration) -> Self {
        DockerRunner { docker, network, public_host, check_timeout }
    }

    /// The network releases run on.
    pub fn network(&self) -> &AppNetwork {
        &self.network
    }

    pub fn container_name(app: &str, release: u32) -> String {
        format!("nap-{app}-v{release}")
    }

    /// Starts the release and waits until it answers. On failure the new
    /// container is removed and whatever ran before is untouched.
    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        let name = Self::container_name(req.app, req.release);
        self.ensure_network().await?;
        // A push killed between create and record can leave a container of the
        // same name; it never served, so it goes.
        self.remove(&name).await?;
        let port_key = format!("{}/tcp", req.port);
        let mut env = vec![format!("PORT={}", req.port)];
        env.extend(req.env.iter().map(|(k, v)| format!("{k}={v}")));
        // The host port is chosen here, not by Docker: a port Docker picks
        // changes on every restart of the container, and the URL with it.
        let mut attempt = 0;
        let started = loop {
            attempt += 1;
            let host_port = free_host_port()?;
            self.create(req, &name, &port_key, host_port, env.clone()).await?;
            if attempt == 1 {
                progress(&format!("Starting {name}"));
            }
            match self.docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await {
                Err(err) if attempt < PORT_ATTEMPTS && is_port_taken(&err) => {
                    warn!(container = %name, host_port, "host port taken meanwhile; trying another");
                    self.remove(&name).await?;
                }
                Err(err) => break Err(err.into()),
                Ok(()) => break self.wait_until_answering(&name, &port_key, req.port, progress).await,
            }
        };
        match started {
            Ok(host_port) => {
                let url = format!("http://{}:{host_port}/", self.public_host);
                info!(container = %name, %url, "release answering");
                Ok(Running { name, host_port, url })
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&name).await {
                    warn!(container = %name, error = %cleanup, "could not remove the failed release's container");
                }
                Err(err)
            }
        }
    }

    async fn create(
        &self,
        req: &RunRequest<'_>,
        name: &str,
        port_key: &str,
        host_port: u16,
        env: Vec<String>,
    ) -> Result<(), RunError> {
        let body = ContainerCreateBody {
            image: Some(req.image.to_owned()),
            env: Some(env),
            exposed_ports: Some(vec![port_key.to_owned()]),
            labels: Some(HashMap::from([
                (labels::APP.to_owned(), req.app.to_owned()),
                (labels::RELEASE.to_owned(), req.release.to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.name.clone()),
                port_bindings: Some(HashMap::from([(
                    port_key.to_owned(),
                    Some(vec![PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(host_port.to_string()) }]),
                )])),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker.create_container(Some(options), body).await?;
        Ok(())
    }

    /// Polls until the container answers HTTP on its published port, and
    /// answers that host port. Fails as soon as the container stops.
    pub(crate) async fn wait_until_answering(
        &self,
        name: &str,
        port_key: &str,
        port: u16,
        progress: Progress<'_>,
    ) -> Result<u16, RunError> {
        progress(&format!("Waiting for {name} to answer HTTP on port {port}"));
        let probe = || async {
            let inspect =
                self.docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await?;
            let state = inspect.state.unwrap_or_default();
            // With restart=unless-stopped a crashing app is "restarting", not "exited".
            if state.running != Some(true) || state.restarting == Some(true) {
                return Err(RunError::Exited {
                    container: name.to_owned(),
                    exit_code: state.exit_code.unwrap_or_default(),
                    log_tail: self.log_tail(name).await,
                });
            }
            inspect
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|ports| ports.get(port_key).cloned().flatten())
                .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()))
                .map(|host_port| SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
                .ok_or_else(|| RunError::NoHostPort { container: name.to_owned(), port })
        };
        match until_answering(self.check_timeout, probe).await? {
            Some(addr) => Ok(addr.port()),
            None => Err(RunError::CheckTimeout {
                container: name.to_owned(),
                port,
                seconds: self.check_timeout.as_secs(),
                log_tail: self.log_tail(name).await,
            }),
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

    /// Stops and removes every container of `app` but release `keep`'s: the
    /// previous release once the new one answers, and leftovers of
    /// interrupted pushes. With `keep` `None`, all of them.
    pub async fn retire_all_but(&self, app: &str, keep: Option<u32>) -> Result<Vec<String>, RunError> {
        let filters = HashMap::from([("label", vec![format!("{}={app}", labels::APP)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let mut retired = Vec::new();
        for container in self.docker.list_containers(Some(options)).await? {
            let Some(name) = container.names.and_then(|n| n.into_iter().next()) else { continue };
            let name = name.trim_start_matches('/').to_owned();
            let release = container.labels.as_ref().and_then(|l| l.get(labels::RELEASE)).and_then(|r| r.parse().ok());
            if release.is_some() && release == keep {
                continue;
            }
            let stop = StopContainerOptionsBuilder::new().t(STOP_GRACE_SECS).build();
            if let Err(err) = self.docker.stop_container(&name, Some(stop)).await {
                warn!(container = %name, error = %err, "stop failed; removing anyway");
            }
            self.remove(&name).await?;
            retired.push(name);
        }
        Ok(retired)
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

impl DockerRunner {
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
            let started_at = match container.state.as_ref().map(ToString::to_string).as_deref() {
                Some("running") => self
                    .docker
                    .inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|i| i.state?.started_at),
                _ => None,
            };
            by_app.entry(app.clone()).or_default().push(Instance {
                release: labels.get(labels::RELEASE).and_then(|r| r.parse().ok()).unwrap_or_default(),
                state: container.state.map_or_else(|| "unknown".into(), |s| s.to_string()),
                started_at,
                host_port: container.ports.unwrap_or_default().iter().find_map(|p| p.public_port),
                name,
            });
        }
        Ok(by_app)
    }

    /// The container's output: the last `tail` lines, then (with `follow`)
    /// whatever it writes until the stream is dropped.
    pub fn logs(
        &self,
        container: &str,
        tail: Option<u64>,
        follow: bool,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, RunError>> + use<> {
        let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).follow(follow).tail(&tail).build();
        self.docker
            .logs(container, Some(options))
            .map(|item| item.map(bollard::container::LogOutput::into_bytes).map_err(RunError::from))
    }

    /// Restarts the release's container and waits until it answers again.
    pub async fn restart(&self, serving: Serving<'_>, progress: Progress<'_>) -> Result<(), RunError> {
        let container = Self::container_name(serving.app, serving.release);
        let options = bollard::query_parameters::RestartContainerOptionsBuilder::new().t(STOP_GRACE_SECS).build();
        progress(&format!("Restarting {container}"));
        self.docker.restart_container(&container, Some(options)).await?;
        let port = serving.port;
        self.wait_until_answering(&container, &format!("{port}/tcp"), port, progress).await.map(|_| ())
    }
}

fn is_port_taken(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.contains("port is already allocated") || message.contains("address already in use"))
}
