//! The runner's errors, in one leaf module that every runner uses: a
//! failed start, with the app's last log lines to show beside it.

use crate::kubernetes::kubectl::KubectlError;
use crate::kubernetes::manifest::ManifestError;
use crate::units::UnitError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Docker daemon: {0}")]
    DockerUnreachable(#[source] bollard::errors::Error),
    #[error("the kubernetes runner needs a registry the cluster can pull from: set `registry` in nap.toml")]
    NoClusterRegistry,
    #[error("the swarm runner needs a registry every node can pull from: set `registry` in nap.toml")]
    NoSwarmRegistry,
    #[error("{container} exited at once (exit code {exit_code})")]
    Exited { container: String, exit_code: i64, log_tail: Vec<String> },
    #[error("{container} did not answer HTTP on port {port} within {seconds} s{}", crate::docker::sockets::hint(*.port, .listening.as_deref()))]
    CheckTimeout {
        container: String,
        port: u16,
        seconds: u64,
        log_tail: Vec<String>,
        /// Where it listens (TCP), where that can be seen.
        listening: Option<Vec<crate::docker::sockets::Listener>>,
    },
    #[error("{container} failed its health check {attempts} times: {failed}")]
    Unhealthy {
        container: String,
        attempts: u32,
        #[source]
        failed: CheckFailed,
        log_tail: Vec<String>,
    },
    #[error("{container} has no address on network {network}")]
    NoAddress { container: String, network: String },
    #[error("no free address left on network {network}")]
    NetworkFull { network: String },
    #[error("a network named {network} exists but is not nap's for its app; rename or remove it")]
    NetworkNotOurs { network: String },
    #[error(
        "network {network} on this host has another subnet than the app's, and containers on it; remove them, or the \
         network, and try again"
    )]
    NetworkOtherSubnet { network: String },
    #[error("network {network} needs a subnet to be made on this host")]
    NoSubnet { network: String },
    #[error("subnet {subnet} of network {network} overlaps a network this host's Docker has")]
    SubnetTaken { network: String, subnet: String },
    #[error("{unit} is {state}")]
    UnitFailed { unit: String, state: String, log_tail: Vec<String> },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error(transparent)]
    Swarm(Box<SwarmError>),
    #[error("{ip} is taken by {holder}; remove it first, or restore on another host")]
    AddressTaken { ip: std::net::Ipv4Addr, holder: String },
    #[error("{ip} is outside network {network} ({subnet})")]
    AddressOutside { ip: std::net::Ipv4Addr, network: String, subnet: String },
    #[error("Docker daemon: {0}")]
    Docker(#[from] bollard::errors::Error),
}

impl From<SwarmError> for RunError {
    fn from(err: SwarmError) -> RunError {
        RunError::Swarm(Box::new(err))
    }
}

impl RunError {
    /// The app's last log lines, to show with the error.
    pub fn log_tail(&self) -> &[String] {
        match self {
            RunError::Exited { log_tail, .. }
            | RunError::CheckTimeout { log_tail, .. }
            | RunError::Unhealthy { log_tail, .. }
            | RunError::UnitFailed { log_tail, .. }
            | RunError::Kubernetes(KubernetesError::NotReady { log_tail, .. }) => log_tail,
            RunError::Swarm(swarm) => match &**swarm {
                SwarmError::RolledBack { log_tail, .. }
                | SwarmError::TaskFailed { log_tail, .. }
                | SwarmError::NotAnswering { log_tail, .. } => log_tail,
                _ => &[],
            },
            _ => &[],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("system bus {address}: {source}")]
    Bus {
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd: {0}")]
    Call(#[from] zbus::Error),
    #[error("no systemd answers on {0}; use the docker runner or point --system-bus at systemd's bus")]
    NotOnBus(String),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("systemd job for {unit} ended with {result:?} (unit {state})")]
    Job { unit: String, result: String, state: String },
    #[error("no answer from systemd about {unit} within {seconds} s")]
    JobTimeout { unit: String, seconds: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(transparent)]
    Kubectl(#[from] KubectlError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("with k8s_kind = \"rc\" nap runs web alone; process types besides web need the Deployment kind")]
    Formation,
    #[error("on Kubernetes an app runs at least one web pod: its Service needs a workload (scale web to 1 or more)")]
    NoWeb,
    #[error("{workload} did not become ready: {reason}")]
    NotReady {
        workload: String,
        #[source]
        reason: KubectlError,
        log_tail: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("swarm manager {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0} is not a swarm manager: point swarm_host at a manager's Engine API (docker swarm init makes one)")]
    NotManager(String),
    #[error("swarm_host {0:?}: use unix:///PATH or tcp://HOST:PORT")]
    BadHost(String),
    #[error("node {node} could not pull {image}: {reason}")]
    Pull { node: String, image: String, reason: String },
    #[error("no node may run {service}: {reason} (see `placement`)")]
    Unplaceable { service: String, reason: String },
    #[error("{task} failed on node {node}: {reason}")]
    TaskFailed { service: String, task: String, node: String, reason: String, log_tail: Vec<String> },
    #[error("the swarm rolled {service} back ({reason}): {why}")]
    RolledBack { service: String, reason: String, why: String, log_tail: Vec<String> },
    #[error("{service} did not converge within {seconds} s: {running} of {replicas} tasks run v{release} ({states})")]
    Timeout { service: String, seconds: u64, running: usize, replicas: u32, release: u32, states: String },
    #[error("{service}: task {task} has no published port")]
    NoPort { service: String, task: String },
    #[error("{task} does not answer at {address}: {why}")]
    NotAnswering {
        task: String,
        address: std::net::SocketAddr,
        #[source]
        why: CheckFailed,
        log_tail: Vec<String>,
    },
    #[error("{0} is not available on the swarm runner yet")]
    Unsupported(&'static str),
    #[error("Docker swarm: {0}")]
    Api(#[from] bollard::errors::Error),
}

/// A setting's value that names none of the known choices.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {name:?}: use {known}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub known: &'static str,
}

impl UnknownName {
    /// The value that `text` names as nap.toml spells it (its serde name),
    /// so that a flag and the file take the same words.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        text: &str,
        what: &'static str,
        known: &'static str,
    ) -> Result<T, UnknownName> {
        let words = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text);
        T::deserialize(words).map_err(|_| UnknownName { what, name: text.to_owned(), known })
    }
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailed {
    #[error("connecting to port {port}: {source}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {path} on port {port}: {source}")]
    Io {
        path: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {path} on port {port}: no answer within {seconds} s")]
    Timeout { path: String, port: u16, seconds: u64 },
    #[error("GET {path} answered {status}")]
    Status { path: String, status: u16 },
    #[error("GET {path} answered {status} without {content:?}")]
    Content { path: String, status: u16, content: String },
    #[error("it has no address yet")]
    NoAddress,
    #[error("no HTTP answer within {seconds} s")]
    NoAnswer { seconds: u64 },
}
