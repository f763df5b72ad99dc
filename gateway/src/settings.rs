//! nap's settings, defined once: each field of [`Settings`] is a flag, a
//! `NAP_*` variable and a nap.toml key at the same time. A flag beats the
//! variable, which beats the file. Adding a setting is adding a field here
//! (with an accessor if it has a default), and a row in the README's table.
//!
//! The git hook process gets the settings that `nap serve` resolved whole,
//! as a file it names (see [`crate::hook::HookInput`]); it reads nothing
//! again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nap_runner::{AppNetwork, ByteSize, KubernetesSettings, RunnerKind, SystemdSettings, WorkloadKind};
use nap_state::{Secret, StoreSettings};
use serde::{Deserialize, Serialize};

const DEFAULT_CONFIG: &str = "/etc/nap/nap.toml";
const DEFAULT_LISTEN: &str = "0.0.0.0:2222";
const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";
const DEFAULT_HTTPS_LISTEN: &str = "0.0.0.0:443";
const DEFAULT_UPSTREAM_TIMEOUT: u64 = 60;
const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
const DEFAULT_DOMAIN: &str = "localhost";
const DEFAULT_CHECK_TIMEOUT: u64 = 30;
const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 60;
const DEFAULT_RETIRE_TIMEOUT: u64 = 30;
const DEFAULT_LOGIN_GRACE_TIME: u64 = 30;
const DEFAULT_MAX_STARTUPS: u32 = 100;
const DEFAULT_PER_SOURCE_MAX_STARTUPS: u32 = 30;
const DEFAULT_PER_SOURCE_CONNECTION_RATE: u32 = 20;
const DEFAULT_BODY_TIMEOUT: u64 = 60;
const DEFAULT_MAX_PUSH_SIZE: u64 = 1024 * 1024 * 1024;
const DEFAULT_RELEASE_TIMEOUT: u64 = 3600;
const DEFAULT_BUILD_TIMEOUT: u64 = 30 * 60;
const DEFAULT_HISTORY_RETENTION: u64 = 5 * 60;
const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
const DEFAULT_DOCKER_CLI: &str = "/usr/bin/docker";
/// Off the shared network's 172.31.0.0/16 and Docker's own pools
/// (172.17-31.0.0/16, 192.168.0.0/16): 4,096 apps of /24.
const DEFAULT_APP_SUBNETS: ipnet::Ipv4Net = match ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 112, 0, 0), 12) {
    Ok(net) => net,
    Err(_) => panic!("a valid prefix"),
};
const DEFAULT_APP_SUBNET_PREFIX: u8 = 24;

/// Every setting. `None` is "not given": the accessors answer the default.
/// Settings shown in `--help` are the everyday ones; the rest (`hide`) work
/// the same way and are listed in the README.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Settings (also NAP_* variables or nap.toml)")]
#[serde(default)]
pub struct Settings {
    /// Settings file [default: /etc/nap/nap.toml, if it exists]
    #[arg(long, global = true, env = "NAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreSettings,
    /// Root of the commiter flow's keys in the store [default: /commiter]
    #[arg(long, global = true, env = "NAP_COMMITER_ROOT", value_name = "PATH")]
    pub commiter_root: Option<String>,
    /// Registry that images are pushed to, e.g. registry.example.com:5000
    #[arg(long, global = true, env = "NAP_REGISTRY", value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// The registry's user name
    #[arg(long, global = true, env = "NAP_REGISTRY_USERNAME", value_name = "USER", hide = true)]
    pub registry_username: Option<String>,
    /// The registry's password; better in NAP_REGISTRY_PASSWORD or nap.toml than on a command line
    #[arg(long, global = true, env = "NAP_REGISTRY_PASSWORD", value_name = "PASSWORD", hide = true)]
    pub registry_password: Option<Secret>,
    /// Host name put in app URLs [default: this machine's host name]
    #[arg(long, global = true, env = "NAP_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
    /// Seconds a new release gets to answer HTTP before the deploy fails [default: 30]
    #[arg(long, global = true, env = "NAP_CHECK_TIMEOUT", value_name = "SECS")]
    pub check_timeout: Option<u64>,
    /// Address the SSH gateway (`nap serve`) listens on [default: 0.0.0.0:2222]
    #[arg(long, global = true, env = "NAP_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The HTTP router's settings (`http_listen`, `https_listen`, the timeouts, `max_connections`, `router_threads`, `metrics_listen`, `trusted_proxies`).
    #[command(flatten)]
    #[serde(flatten)]
    pub router: RouterSettings,
    /// The contact e-mail of nap's ACME account (`letsencrypt`)
    #[arg(long, global = true, env = "NAP_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// The ACME directory certificates are ordered from [default: Let's Encrypt's]
    #[arg(long, global = true, env = "NAP_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// A PEM file of the CA that signs the ACME directory's own HTTPS, for a private ACME server (pebble) [default: the system's roots]
    #[arg(long, global = true, env = "NAP_ACME_DIRECTORY_CA", value_name = "FILE", hide = true)]
    pub acme_directory_ca: Option<PathBuf>,
    /// Apps answer at APP.DOMAIN on the router [default: localhost, so APP.localhost works on this host]
    #[arg(long, global = true, env = "NAP_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Seconds the routers get to drain a replaced release before it is stopped [default: 30]
    #[arg(long, global = true, env = "NAP_RETIRE_TIMEOUT", value_name = "SECS")]
    pub retire_timeout: Option<u64>,
    /// Seconds an SSH connection gets to log in before it is cut, as OpenSSH's LoginGraceTime [default: 30]
    #[arg(long, global = true, env = "NAP_LOGIN_GRACE_TIME", value_name = "SECS", hide = true)]
    pub login_grace_time: Option<u64>,
    /// SSH connections not yet logged in, in all; one more cuts the oldest of them [default: 100]
    #[arg(long, global = true, env = "NAP_MAX_STARTUPS", value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_startups: Option<u32>,
    /// SSH connections not yet logged in, per client address; one more cuts that address's oldest [default: 30]
    #[arg(long, global = true, env = "NAP_PER_SOURCE_MAX_STARTUPS", value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_source_max_startups: Option<u32>,
    /// New SSH connections a second from one client address (bursts of 5 s worth); more are closed at once, before any SSH [default: 20]
    #[arg(long, global = true, env = "NAP_PER_SOURCE_CONNECTION_RATE", value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_source_connection_rate: Option<u32>,
    /// What SSH connections that end without logging in cost their address, as OpenSSH's PerSourcePenalties: `noauth:1 grace-exceeded:20 evicted:1 max:600 min:15` (seconds), or `no` [default: that]
    #[arg(long, global = true, env = "NAP_PER_SOURCE_PENALTIES", value_name = "PENALTIES", hide = true)]
    pub per_source_penalties: Option<Penalties>,
    /// Addresses and CIDR ranges that per_source_penalties and per_source_connection_rate never refuse, comma-separated, or `none` [default: 127.0.0.0/8, ::1]
    #[arg(long, global = true, env = "NAP_PER_SOURCE_PENALTY_EXEMPT_LIST", value_name = "ADDRESSES", hide = true)]
    pub per_source_penalty_exempt_list: Option<AddressList>,
    /// The most a push may send, and the most its files may take unpacked (512m, 1g) [default: 1g]
    #[arg(long, global = true, env = "NAP_MAX_PUSH_SIZE", value_name = "SIZE", hide = true)]
    pub max_push_size: Option<ByteSize>,
    /// Seconds a push's image build may take before it is stopped and the push refused [default: 1800]
    #[arg(long, global = true, env = "NAP_BUILD_TIMEOUT", value_name = "SECS", hide = true)]
    pub build_timeout: Option<u64>,
    /// Seconds a release phase (the Procfile's `release:` command) may take before it is stopped and the release refused [default: 3600]
    #[arg(long, global = true, env = "NAP_RELEASE_TIMEOUT", value_name = "SECS", hide = true)]
    pub release_timeout: Option<u64>,
    /// Seconds of the store's history kept for watches; `nap serve` compacts what is older, old config values with it [default: 300]
    #[arg(long, global = true, env = "NAP_HISTORY_RETENTION", value_name = "SECS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_retention: Option<u64>,
    /// Seconds that running pushes get to finish after SIGTERM (`nap serve`) [default: 60]
    #[arg(long, global = true, env = "NAP_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
    /// How releases run: docker, systemd, kubernetes or swarm [default: systemd if the system bus has it, else docker]
    #[arg(long, global = true, env = "NAP_RUNNER", value_name = "RUNNER")]
    pub runner: Option<RunnerKind>,
    /// D-Bus address of the system bus, e.g. unix:path=/run/dbus/system_bus_socket [default: the system's]
    #[arg(long, global = true, env = "NAP_SYSTEM_BUS", value_name = "ADDRESS")]
    pub system_bus: Option<String>,
    /// Where the systemd runner writes units [default: /etc/systemd/system]
    #[arg(long, global = true, env = "NAP_UNIT_DIR", value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// Where the systemd runner writes each release's environment file [default: DATA_DIR/env]
    #[arg(long, global = true, env = "NAP_ENV_DIR", value_name = "DIR", hide = true)]
    pub env_dir: Option<PathBuf>,
    /// A directory whose templates replace the built-in ones of units/
    #[arg(long, global = true, env = "NAP_UNITS_DIR", value_name = "DIR", hide = true)]
    pub units_dir: Option<PathBuf>,
    /// The Docker CLI that systemd units run [default: /usr/bin/docker]
    #[arg(long, global = true, env = "NAP_DOCKER_CLI", value_name = "PATH", hide = true)]
    pub docker_cli: Option<String>,
    /// This host's IP for the commiter flow [default: the default route's address]
    #[arg(long, global = true, env = "NAP_HOST_IP", value_name = "IP", hide = true)]
    pub host_ip: Option<String>,
    /// The Kubernetes node take-over RCs pin pods to [default: the host IP]
    #[arg(long, global = true, env = "NAP_NODE_NAME", value_name = "NODE", hide = true)]
    pub node_name: Option<String>,
    /// This host's name among nap's hosts, as locks name their holder [default: the machine's host name]
    #[arg(long, global = true, env = "NAP_HOST_NAME", value_name = "NAME", hide = true)]
    pub host_name: Option<String>,
    /// The Docker network every app shared before each had its own; snapshots restored outside every app's subnet go there [default: nap]
    #[arg(long, global = true, env = "NAP_NETWORK", value_name = "NAME", hide = true)]
    pub network: Option<String>,
    /// That network's subnet [default: 172.31.0.0/16]
    #[arg(long, global = true, env = "NAP_NETWORK_SUBNET", value_name = "CIDR", hide = true)]
    pub network_subnet: Option<String>,
    /// Where each app's own Docker network gets its subnet, alike on every host [default: 10.112.0.0/12]
    #[arg(long, global = true, env = "NAP_APP_SUBNETS", value_name = "CIDR", hide = true)]
    pub app_subnets: Option<ipnet::Ipv4Net>,
    /// The prefix length of each app's subnet within app_subnets [default: 24]
    #[arg(long, global = true, env = "NAP_APP_SUBNET_PREFIX", value_name = "BITS", hide = true)]
    pub app_subnet_prefix: Option<u8>,
    /// The Kubernetes runner's settings (`kubectl`, `kubeconfig`, `k8s_*`).
    #[command(flatten)]
    #[serde(flatten)]
    pub k8s: K8sSettings,
    /// The swarm runner's settings (`swarm_*`).
    #[command(flatten)]
    #[serde(flatten)]
    pub swarm: SwarmFlags,
    /// Announce each new release as the CI/CD rollout key /k8s-deploy/PROJECT/rollout/ENV
    #[arg(long, global = true, env = "NAP_PUBLISH_ROLLOUT", value_name = "PROJECT/ENV", hide = true)]
    pub publish_rollout: Option<RolloutTarget>,
}

/// The HTTP router's settings (`http_listen`, `https_listen`, the timeouts, `max_connections`, `router_threads`, `metrics_listen`, `trusted_proxies`), flattened into
/// [`Settings`]: the file, the environment and the flags spell them as
/// before.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Settings (also NAP_* variables or nap.toml)")]
#[serde(default)]
pub struct RouterSettings {
    /// Where the HTTP router listens (`nap serve`, `nap router`), or `off` [default: 0.0.0.0:80]
    #[arg(long, global = true, env = "NAP_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Where the router serves HTTPS to hosts with a certificate, or `off` [default: 0.0.0.0:443]
    #[arg(long, global = true, env = "NAP_HTTPS_LISTEN", value_name = "ADDR")]
    pub https_listen: Option<String>,
    /// Seconds an app gets to answer a request's headers through the router before the client gets 504 [default: 60]
    #[arg(long, global = true, env = "NAP_UPSTREAM_TIMEOUT", value_name = "SECS")]
    pub upstream_timeout: Option<u64>,
    /// Seconds the router waits for more of a request's body, or for a client to take more of an answer, before it cuts the connection (408) [default: 60]
    #[arg(long, global = true, env = "NAP_BODY_TIMEOUT", value_name = "SECS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: Option<u64>,
    /// Client connections the router keeps open; one more closes one waiting on its client first [default: from the open-file limit, leaving room for SSH]
    #[arg(long, global = true, env = "NAP_MAX_CONNECTIONS", value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Threads that serve the router's connections, each on its own, as nginx's workers [default: half the cores, at least 1]
    #[arg(long, global = true, env = "NAP_ROUTER_THREADS", value_name = "N", hide = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub router_threads: Option<u16>,
    /// Where the router serves Prometheus metrics at /metrics, e.g. 127.0.0.1:9100, or `off` [default: off]
    #[arg(long, global = true, env = "NAP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Proxies in front of the router whose X-Forwarded-For, Forwarded and X-Real-IP are kept, as addresses or CIDRs, comma-separated [default: none: the router sets X-Forwarded-For to the client's address and drops the others]
    #[arg(long, global = true, env = "NAP_TRUSTED_PROXIES", value_name = "CIDR,...", hide = true)]
    pub trusted_proxies: Option<AddressList>,
}

/// The Kubernetes runner's settings (`kubectl`, `kubeconfig`, `k8s_*`), flattened into
/// [`Settings`]: the file, the environment and the flags spell them as
/// before.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Settings (also NAP_* variables or nap.toml)")]
#[serde(default)]
pub struct K8sSettings {
    /// Kubernetes runner: the kubectl program [default: kubectl]
    #[arg(long, global = true, env = "NAP_KUBECTL", value_name = "PATH", hide = true)]
    pub kubectl: Option<String>,
    /// Kubernetes runner: the kubeconfig kubectl uses [default: kubectl's own]
    #[arg(long, global = true, env = "NAP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes runner: the kubeconfig context [default: its current context]
    #[arg(long, global = true, env = "NAP_K8S_CONTEXT", value_name = "CONTEXT")]
    pub k8s_context: Option<String>,
    /// Kubernetes runner: the namespace releases go to [default: the context's]
    #[arg(long, global = true, env = "NAP_K8S_NAMESPACE", value_name = "NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// Kubernetes runner: deployment (one Deployment per app) or rc (a ReplicationController per release) [default: deployment]
    #[arg(long, global = true, env = "NAP_K8S_KIND", value_name = "KIND")]
    pub k8s_kind: Option<WorkloadKind>,
    /// Kubernetes runner: the Service's type [default: NodePort]
    #[arg(long, global = true, env = "NAP_K8S_SERVICE_TYPE", value_name = "TYPE", hide = true)]
    pub k8s_service_type: Option<String>,
    /// Kubernetes runner: pods per release [default: 1]
    #[arg(long, global = true, env = "NAP_K8S_REPLICAS", value_name = "N", hide = true)]
    pub k8s_replicas: Option<u32>,
    /// Kubernetes runner: the cluster's pod network (e.g. 10.244.0.0/16); set, an app's web port takes no connection from another app's pods [default: none]
    #[arg(long, global = true, env = "NAP_K8S_POD_CIDR", value_name = "CIDR", hide = true)]
    pub k8s_pod_cidr: Option<ipnet::Ipv4Net>,
    /// Kubernetes runner: seconds a rollout may take before it is undone [default: 300]
    #[arg(long, global = true, env = "NAP_K8S_TIMEOUT", value_name = "SECS", hide = true)]
    pub k8s_timeout: Option<u64>,
}

/// The swarm runner's settings (`swarm_*`), flattened into
/// [`Settings`]: the file, the environment and the flags spell them as
/// before.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[command(next_help_heading = "Settings (also NAP_* variables or nap.toml)")]
#[serde(default)]
pub struct SwarmFlags {
    /// Swarm runner: a manager's Engine API, unix:///PATH or tcp://HOST:PORT [default: unix:///var/run/docker.sock]
    #[arg(long, global = true, env = "NAP_SWARM_HOST", value_name = "URL")]
    pub swarm_host: Option<String>,
    /// Swarm runner: a directory with ca.pem, cert.pem and key.pem for a tcp:// swarm_host over TLS (as DOCKER_CERT_PATH)
    #[arg(long, global = true, env = "NAP_SWARM_CERT_PATH", value_name = "DIR")]
    pub swarm_cert_path: Option<PathBuf>,
    /// Swarm runner: the overlay network every app's tasks join [default: nap-swarm]
    #[arg(long, global = true, env = "NAP_SWARM_NETWORK", value_name = "NAME", hide = true)]
    pub swarm_network: Option<String>,
    /// Swarm runner: seconds the swarm watches each updated task for a failure before the next [default: 5]
    #[arg(long, global = true, env = "NAP_SWARM_MONITOR", value_name = "SECS", hide = true)]
    pub swarm_monitor: Option<u64>,
    /// Swarm runner: seconds a rollout may take before nap rolls it back [default: 300]
    #[arg(long, global = true, env = "NAP_SWARM_TIMEOUT", value_name = "SECS", hide = true)]
    pub swarm_timeout: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading settings file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One line: toml's own message spans several, with a drawing of the place.
    #[error("settings file {}: line {line}: {}", path.display(), crate::usage::flat(source.message()))]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: toml::de::Error,
    },
    #[error("settings file {}: unknown setting {key:?}", path.display())]
    Unknown { path: PathBuf, key: String },
    #[error("settings: {0}")]
    Merge(#[source] serde_json::Error),
    #[error("app_subnet_prefix {prefix} does not fit app_subnets {pool}: use {} to 30", pool.prefix_len())]
    AppSubnetPrefix { pool: ipnet::Ipv4Net, prefix: u8 },
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
}

impl Settings {
    /// The effective settings: the file (`--config`, else
    /// /etc/nap/nap.toml if it exists), overridden by what `given` (flags
    /// and the environment, as clap read them) sets.
    pub fn load(given: &Settings) -> Result<Settings, SettingsError> {
        let path = given.file();
        let file = match &path {
            Some(path) => Settings::read(path)?,
            None => Settings::default(),
        };
        let mut settings = file.overridden_by(given)?;
        settings.config = path;
        // A bad store address fails now, not at the first command that needs it.
        settings.store.etcd()?;
        settings.app_subnets()?;
        Ok(settings)
    }

    /// The settings file these settings name: `--config`, else
    /// /etc/nap/nap.toml if it exists.
    fn file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| Path::new(DEFAULT_CONFIG).exists().then(|| DEFAULT_CONFIG.into()))
    }

    /// The settings that `given` (flags and `NAP_*` variables) sets
    /// otherwise than the settings file does, by name. `nap serve` warns of
    /// them: OpenSSH's forced command (`nap ssh-command`) and `nap VERB` on
    /// the host read the file, not the flags `nap serve` was started with.
    /// The addresses only `nap serve` listens on, and the data directory
    /// (which `keys authorized-keys` passes on), are not counted.
    pub fn beside_file(given: &Settings) -> Result<Vec<String>, SettingsError> {
        const SERVE_ONLY: [&str; 6] = ["config", "data_dir", "listen", "http_listen", "https_listen", "metrics_listen"];
        let file = match given.file() {
            Some(path) => to_map(&Settings::read(&path)?)?,
            None => serde_json::Map::new(),
        };
        Ok(to_map(given)?
            .into_iter()
            .filter(|(key, value)| {
                !value.is_null() && !SERVE_ONLY.contains(&key.as_str()) && file.get(key) != Some(value)
            })
            .map(|(key, _)| key)
            .collect())
    }

    /// Reads a settings file; a key that is no setting is an error, not
    /// silently ignored.
    pub fn read(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.into(), source })?;
        let parse_err = |source: toml::de::Error| {
            let line = source.span().map_or(1, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            SettingsError::Parse { path: path.into(), line, source }
        };
        let table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        let known = Settings::keys();
        if let Some(key) = table.keys().find(|key| !known.contains(key.as_str()) || *key == "config") {
            return Err(SettingsError::Unknown { path: path.into(), key: key.clone() });
        }
        toml::from_str(&text).map_err(parse_err)
    }

    /// These settings with every setting that `over` gives replaced by its.
    fn overridden_by(&self, over: &Settings) -> Result<Settings, SettingsError> {
        let (mut merged, over) = (to_map(self)?, to_map(over)?);
        merged.extend(over.into_iter().filter(|(_, value)| !value.is_null()));
        serde_json::from_value(serde_json::Value::Object(merged)).map_err(SettingsError::Merge)
    }

    /// Every setting's name, as nap.toml spells it.
    fn keys() -> BTreeSet<String> {
        to_map(&Settings::default()).map(|map| map.into_iter().map(|(key, _)| key).collect()).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.store.data_dir()
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir().join("repos")
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.data_dir().join("locks")
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.data_dir().join("ssh_host_ed25519_key")
    }

    /// Opens the store the settings name.
    pub async fn open_store(&self) -> Result<nap_state::Store, nap_state::StoreError> {
        self.store.open().await
    }

    /// The registry images go to; `None` (or an empty `registry`): local images only.
    pub fn registry(&self) -> Option<nap_builder::Registry> {
        self.registry.clone().filter(|r| !r.is_empty()).map(|address| nap_builder::Registry {
            address,
            username: self.registry_username.clone(),
            password: self.registry_password.as_ref().map(|p| p.expose().to_owned()),
        })
    }

    pub fn public_host(&self) -> String {
        self.public_host.clone().unwrap_or_else(machine_name)
    }

    pub fn check_timeout(&self) -> Duration {
        Duration::from_secs(self.check_timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT))
    }

    pub fn listen(&self) -> String {
        self.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into())
    }

    /// Where `git push` reaches nap, without the app: `ssh://USER@HOST:PORT`.
    /// In a forced command (OpenSSH runs `nap ssh-command`), the user and
    /// port of that SSH session; elsewhere `nap serve`'s, as `public_host`
    /// and the port of `listen`. Port 22 is left out.
    pub fn git_remote(&self) -> String {
        let session = std::env::var_os("SSH_ORIGINAL_COMMAND").and_then(|_| {
            let connection = std::env::var("SSH_CONNECTION").ok()?;
            let port = connection.split_ascii_whitespace().nth(3)?.parse::<u16>().ok()?;
            let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).ok()?;
            Some((user, port))
        });
        let (user, port) = session.unwrap_or_else(|| {
            let listen = self.listen();
            let port = listen.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or(2222);
            ("nap".to_owned(), port)
        });
        let host = self.public_host();
        if port == 22 { format!("ssh://{user}@{host}") } else { format!("ssh://{user}@{host}:{port}") }
    }

    /// Where the router listens; `None` with `off`.
    pub fn http_listen(&self) -> Option<String> {
        let listen = self.router.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN);
        (listen != "off").then(|| listen.to_owned())
    }

    /// Where the router serves HTTPS; `None` with `off`, or with the router off.
    pub fn https_listen(&self) -> Option<String> {
        self.http_listen()?;
        let listen = self.router.https_listen.as_deref().unwrap_or(DEFAULT_HTTPS_LISTEN);
        (listen != "off").then(|| listen.to_owned())
    }

    /// Where the router serves its metrics; `None` unless set (and the router on).
    pub fn metrics_listen(&self) -> Option<String> {
        self.http_listen()?;
        self.router.metrics_listen.clone().filter(|listen| listen != "off")
    }

    /// How many threads serve the router's connections: `router_threads`,
    /// else half the cores (the apps it routes to mostly share the host).
    pub fn router_threads(&self) -> usize {
        self.router.router_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1)),
            usize::from,
        )
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_secs(self.router.upstream_timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT))
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.router.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT))
    }

    /// How many client connections the router keeps open: `max_connections`,
    /// else as many as fit in `file_limit` (the process's open files) at two
    /// files each (the client's, and the one to the app it forwards to), once
    /// a quarter of the limit (256 to 4096) is left for the SSH gateway, the
    /// store, the log, git and the upstream pools.
    pub fn max_connections(&self, file_limit: u64) -> usize {
        if let Some(max) = self.router.max_connections {
            return usize::try_from(max).unwrap_or(usize::MAX);
        }
        let reserve = (file_limit / 4).clamp(256, 4096);
        usize::try_from(file_limit.saturating_sub(reserve) / 2).unwrap_or(usize::MAX).max(64)
    }

    /// The ACME directory `letsencrypt` orders from.
    pub fn acme_directory(&self) -> String {
        self.acme_directory.clone().unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_owned())
    }

    /// An app's address on the router, `http://APP.DOMAIN[:PORT]/`, the port
    /// only when the router is not on 80; `None` with the router off.
    pub fn app_url(&self, app: &str) -> Option<String> {
        let listen = self.http_listen()?;
        let port = listen.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).unwrap_or(80);
        let host = self.app_host(app);
        Some(if port == 80 { format!("http://{host}/") } else { format!("http://{host}:{port}/") })
    }

    /// An app's own host on the router: `APP.DOMAIN`.
    pub fn app_host(&self, app: &str) -> String {
        format!("{app}.{}", self.domain())
    }

    /// The domain apps answer under, without a leading or trailing dot.
    pub fn domain(&self) -> String {
        let domain = self.domain.as_deref().unwrap_or(DEFAULT_DOMAIN).trim_matches('.');
        if domain.is_empty() { DEFAULT_DOMAIN.to_owned() } else { domain.to_ascii_lowercase() }
    }

    pub fn retire_timeout(&self) -> Duration {
        Duration::from_secs(self.retire_timeout.unwrap_or(DEFAULT_RETIRE_TIMEOUT))
    }

    pub fn login_grace_time(&self) -> Duration {
        Duration::from_secs(self.login_grace_time.unwrap_or(DEFAULT_LOGIN_GRACE_TIME))
    }

    /// How many SSH connections may wait to log in: in all, and per client address.
    pub fn max_startups(&self) -> (usize, usize) {
        let limit = |value: Option<u32>, default| usize::try_from(value.unwrap_or(default)).unwrap_or(usize::MAX);
        (
            limit(self.max_startups, DEFAULT_MAX_STARTUPS),
            limit(self.per_source_max_startups, DEFAULT_PER_SOURCE_MAX_STARTUPS),
        )
    }

    /// New SSH connections a second one client address may open.
    pub fn per_source_connection_rate(&self) -> u32 {
        self.per_source_connection_rate.unwrap_or(DEFAULT_PER_SOURCE_CONNECTION_RATE)
    }

    pub fn per_source_penalties(&self) -> Penalties {
        self.per_source_penalties.unwrap_or_default()
    }

    /// The addresses the per-source penalties and rate never refuse.
    pub fn per_source_penalty_exempt_list(&self) -> AddressList {
        self.per_source_penalty_exempt_list.clone().unwrap_or_else(AddressList::loopback)
    }

    pub fn max_push_size(&self) -> u64 {
        self.max_push_size.map_or(DEFAULT_MAX_PUSH_SIZE, |size| size.0)
    }

    pub fn build_timeout(&self) -> Duration {
        Duration::from_secs(self.build_timeout.unwrap_or(DEFAULT_BUILD_TIMEOUT))
    }

    pub fn release_timeout(&self) -> Duration {
        Duration::from_secs(self.release_timeout.unwrap_or(DEFAULT_RELEASE_TIMEOUT))
    }

    pub fn history_retention(&self) -> Duration {
        Duration::from_secs(self.history_retention.unwrap_or(DEFAULT_HISTORY_RETENTION))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT))
    }

    pub fn systemd(&self) -> SystemdSettings {
        SystemdSettings {
            bus_address: self.system_bus.clone(),
            unit_dir: self.unit_dir.clone().unwrap_or_else(|| DEFAULT_UNIT_DIR.into()),
            env_dir: self.env_dir.clone().unwrap_or_else(|| self.data_dir().join("env")),
            template_dir: self.units_dir.clone(),
            docker_cli: self.docker_cli.clone().unwrap_or_else(|| DEFAULT_DOCKER_CLI.into()),
        }
    }

    /// Where the commiter flow's keys live, without a trailing `/`.
    pub fn commiter_root(&self) -> String {
        self.commiter_root.as_deref().map_or_else(
            || nap_state::layout::commiter::DEFAULT_ROOT.into(),
            |root| root.trim_end_matches('/').to_owned(),
        )
    }

    /// The network every app shared before each had its own.
    pub fn network(&self) -> AppNetwork {
        let defaults = AppNetwork::default();
        AppNetwork {
            name: self.network.clone().unwrap_or(defaults.name),
            subnet: self.network_subnet.clone().or(defaults.subnet),
            app: None,
        }
    }

    /// The pool each app's own network gets its subnet from, and the
    /// prefix length of each subnet in it.
    pub fn app_subnets(&self) -> Result<(ipnet::Ipv4Net, u8), SettingsError> {
        let pool = self.app_subnets.unwrap_or(DEFAULT_APP_SUBNETS).trunc();
        let prefix = self.app_subnet_prefix.unwrap_or(DEFAULT_APP_SUBNET_PREFIX);
        if prefix < pool.prefix_len() || prefix > 30 {
            return Err(SettingsError::AppSubnetPrefix { pool, prefix });
        }
        Ok((pool, prefix))
    }

    pub fn host_name(&self) -> String {
        self.host_name.clone().unwrap_or_else(machine_name)
    }

    /// This host's IP: `host_ip`, else the address of the default route.
    pub fn host_ip(&self) -> Option<String> {
        self.host_ip.clone().or_else(default_route_address)
    }

    pub fn kubernetes(&self) -> KubernetesSettings {
        let defaults = KubernetesSettings::default();
        KubernetesSettings {
            kubectl: self.k8s.kubectl.clone().unwrap_or(defaults.kubectl),
            kubeconfig: self.k8s.kubeconfig.clone(),
            context: self.k8s.k8s_context.clone(),
            namespace: self.k8s.k8s_namespace.clone(),
            kind: self.k8s.k8s_kind.unwrap_or(defaults.kind),
            service_type: self.k8s.k8s_service_type.clone().unwrap_or(defaults.service_type),
            replicas: self.k8s.k8s_replicas.unwrap_or(defaults.replicas),
            rollout_timeout: self.k8s.k8s_timeout.map_or(defaults.rollout_timeout, Duration::from_secs),
            units_dir: self.units_dir.clone(),
            pod_cidr: self.k8s.k8s_pod_cidr.map(|cidr| cidr.to_string()),
        }
    }
}

impl Settings {
    pub fn swarm(&self) -> nap_runner::SwarmSettings {
        nap_runner::SwarmSettings {
            host: self.swarm.swarm_host.clone().unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
            cert_path: self.swarm.swarm_cert_path.clone(),
            network: self.swarm.swarm_network.clone().unwrap_or_else(|| "nap-swarm".into()),
            rollout: nap_runner::Rollout {
                monitor: Duration::from_secs(self.swarm.swarm_monitor.unwrap_or(5)),
                stop_grace: self.retire_timeout().min(Duration::from_secs(30)),
            },
            timeout: Duration::from_secs(self.swarm.swarm_timeout.unwrap_or(300)),
            check_timeout: self.check_timeout(),
            registry_auth: self.registry().and_then(|registry| {
                let username = registry.username?;
                Some(nap_runner::RegistryAuth(bollard::auth::DockerCredentials {
                    username: Some(username),
                    password: registry.password,
                    serveraddress: Some(registry.address),
                    ..Default::default()
                }))
            }),
        }
    }
}

fn to_map(settings: &Settings) -> Result<serde_json::Map<String, serde_json::Value>, SettingsError> {
    match serde_json::to_value(settings).map_err(SettingsError::Merge)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Ok(serde_json::Map::new()),
    }
}

/// `PROJECT/ENV` of the rollout key a release is published under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RolloutTarget {
    pub project: String,
    pub env: String,
}

#[derive(Debug, thiserror::Error)]
#[error("publish_rollout {0:?} is not PROJECT/ENV (letters, digits, - _ .)")]
pub struct InvalidRolloutTarget(String);

impl std::str::FromStr for RolloutTarget {
    type Err = InvalidRolloutTarget;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        match text.split_once('/') {
            Some((project, env)) if word(project) && word(env) => {
                Ok(RolloutTarget { project: project.to_owned(), env: env.to_owned() })
            }
            _ => Err(InvalidRolloutTarget(text.to_owned())),
        }
    }
}

impl TryFrom<String> for RolloutTarget {
    type Error = InvalidRolloutTarget;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<RolloutTarget> for String {
    fn from(target: RolloutTarget) -> String {
        format!("{}/{}", target.project, target.env)
    }
}

/// What SSH connections that end without logging in cost their client's
/// address, in seconds, as OpenSSH's `PerSourcePenalties`: `noauth` for one
/// the client closed, `grace-exceeded` for one cut at `login_grace_time`,
/// `evicted` for one cut to make room for newer ones (`max_startups`).
/// Penalties add up, to `max` at most, and run out as time passes; an
/// address whose penalty passes `min` is refused at once until it runs
/// out. Written `noauth:1 grace-exceeded:20 evicted:1 max:600 min:15` (any
/// subset; the rest keep their defaults), `yes` for the defaults, or `no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Penalties {
    pub noauth: u32,
    pub grace_exceeded: u32,
    pub evicted: u32,
    pub max: u32,
    pub min: u32,
}

impl Penalties {
    /// `no`: no penalty ever.
    pub const OFF: Penalties = Penalties { noauth: 0, grace_exceeded: 0, evicted: 0, max: 0, min: 0 };

    pub fn is_off(&self) -> bool {
        self.noauth == 0 && self.grace_exceeded == 0 && self.evicted == 0
    }
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties { noauth: 1, grace_exceeded: 20, evicted: 1, max: 600, min: 15 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "per_source_penalties {0:?} is not `no`, `yes` or KIND:SECONDS words (noauth, grace-exceeded, evicted, max, min)"
)]
pub struct InvalidPenalties(String);

impl std::str::FromStr for Penalties {
    type Err = InvalidPenalties;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPenalties(text.to_owned());
        match text.trim() {
            "no" => return Ok(Penalties::OFF),
            "yes" => return Ok(Penalties::default()),
            _ => {}
        }
        let mut penalties = Penalties::default();
        let words: Vec<&str> = text.split([' ', ',', '\t']).filter(|word| !word.is_empty()).collect();
        if words.is_empty() {
            return Err(invalid());
        }
        for word in words {
            let (kind, seconds) = word.split_once(':').ok_or_else(invalid)?;
            let seconds: u32 = seconds.strip_suffix('s').unwrap_or(seconds).parse().map_err(|_| invalid())?;
            let field = match kind {
                "noauth" => &mut penalties.noauth,
                "grace-exceeded" => &mut penalties.grace_exceeded,
                "evicted" => &mut penalties.evicted,
                "max" => &mut penalties.max,
                "min" => &mut penalties.min,
                _ => return Err(invalid()),
            };
            *field = seconds;
        }
        Ok(penalties)
    }
}

impl TryFrom<String> for Penalties {
    type Error = InvalidPenalties;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Penalties> for String {
    fn from(penalties: Penalties) -> String {
        let Penalties { noauth, grace_exceeded, evicted, max, min } = penalties;
        if penalties.is_off() {
            return "no".to_owned();
        }
        format!("noauth:{noauth} grace-exceeded:{grace_exceeded} evicted:{evicted} max:{max} min:{min}")
    }
}

/// Addresses and CIDR ranges (`127.0.0.0/8, ::1`), or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddressList(Vec<ipnet::IpNet>);

impl AddressList {
    /// Loopback: connections from this host itself, which behind a local
    /// proxy are every client's.
    pub fn loopback() -> AddressList {
        use ipnet::{IpNet, Ipv4Net, Ipv6Net};
        use std::net::{Ipv4Addr, Ipv6Addr};
        AddressList(vec![
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        ])
    }

    /// None at all.
    pub fn none() -> AddressList {
        AddressList(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is in the list (an IPv4-mapped IPv6 address as its
    /// IPv4 address).
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = match address {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, std::net::IpAddr::V4),
            v4 @ std::net::IpAddr::V4(_) => v4,
        };
        self.0.iter().any(|net| net.contains(&address))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or a CIDR network like 10.0.0.0/8")]
pub struct InvalidAddress(String);

impl std::str::FromStr for AddressList {
    type Err = InvalidAddress;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "none" {
            return Ok(AddressList(Vec::new()));
        }
        let words = text.split([' ', ',', '\t']).filter(|word| !word.is_empty());
        let parse = |word: &str| {
            word.parse::<ipnet::IpNet>()
                .or_else(|_| word.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| InvalidAddress(word.to_owned()))
        };
        Ok(AddressList(words.map(parse).collect::<Result<_, _>>()?))
    }
}

impl TryFrom<String> for AddressList {
    type Error = InvalidAddress;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<AddressList> for String {
    fn from(list: AddressList) -> String {
        if list.0.is_empty() {
            return "none".to_owned();
        }
        list.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

fn machine_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The IPv4 address of the interface the default route goes through.
fn default_route_address() -> Option<String> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_owned())
    })?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|addr| {
        let ip = addr.address?.as_sockaddr_in()?.ip();
        (addr.interface_name == interface).then(|| ip.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write settings");
        file
    }

    #[test]
    fn a_file_from_before_the_groups_reads_into_them_and_back_the_same() {
        let text = "http_listen = \"127.0.0.1:8080\"\nrouter_threads = 3\ntrusted_proxies = \"10.0.0.0/8\"\n\
                    kubeconfig = \"/etc/nap/kubeconfig\"\nk8s_namespace = \"shop\"\nk8s_replicas = 2\n\
                    swarm_host = \"tcp://manager:2376\"\nswarm_timeout = 60\nregistry = \"r:5000\"\n";
        let settings = Settings::read(file(text).path()).expect("an older file reads");
        assert_eq!(settings.router.http_listen.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(settings.router_threads(), 3);
        assert!(settings.router.trusted_proxies.is_some());
        assert_eq!(settings.kubernetes().namespace.as_deref(), Some("shop"));
        assert_eq!(settings.kubernetes().replicas, 2);
        assert_eq!(settings.k8s.kubeconfig.as_deref(), Some(Path::new("/etc/nap/kubeconfig")));
        assert_eq!(settings.swarm().host, "tcp://manager:2376");
        assert_eq!(settings.swarm().timeout, Duration::from_secs(60));
        // Written out (the hook's input), the names are the file's.
        let json = serde_json::to_value(&settings).expect("encode");
        for key in ["http_listen", "router_threads", "kubeconfig", "k8s_namespace", "swarm_host", "registry"] {
            assert!(json.get(key).is_some_and(|value| !value.is_null()), "{key} in {json}");
        }
        assert_eq!(serde_json::from_value::<Settings>(json).expect("decode"), settings);
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let toml = file("registry = \"file:5000\"\ncheck_timeout = 7\nstore = \"etcd://127.0.0.1:2379\"\n");
        let given =
            Settings { config: Some(toml.path().into()), registry: Some("flag:5000".into()), ..Settings::default() };
        let settings = Settings::load(&given).expect("settings");
        assert_eq!(settings.registry().map(|r| r.address).as_deref(), Some("flag:5000"));
        assert_eq!(settings.check_timeout(), Duration::from_secs(7));
        assert_eq!(settings.store.store.as_deref(), Some("etcd://127.0.0.1:2379"));
        assert_eq!(settings.listen(), DEFAULT_LISTEN);
        assert_eq!(settings.config.as_deref(), Some(toml.path()));
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_is_an_error_naming_it() {
        let typo = file("registy = \"x\"\n");
        let err = Settings::read(typo.path()).expect_err("typo");
        assert!(err.to_string().contains("unknown setting \"registy\""), "{err}");
        let rollout = file("registry = \"r:5000\"\npublish_rollout = \"nope\"\n");
        let err = Settings::read(rollout.path()).expect_err("bad rollout").to_string();
        assert!(err.contains("line 2: ") && err.contains("PROJECT/ENV") && !err.contains('\n'), "{err}");
        let runner = file("runner = \"foo\"\n");
        let err = Settings::read(runner.path()).expect_err("bad runner").to_string();
        assert!(err.contains("line 1: ") && err.contains("foo") && !err.contains('\n'), "{err}");
        let store = Settings {
            store: StoreSettings { store: Some("http://x".into()), ..Default::default() },
            ..Default::default()
        };
        assert!(Settings::load(&Settings { config: Some(file("").path().into()), ..store }).is_err());
    }

    #[test]
    fn app_subnets_default_off_the_shared_network_and_a_prefix_must_fit() {
        let (pool, prefix) = Settings::default().app_subnets().expect("the defaults fit");
        assert_eq!((pool.to_string().as_str(), prefix), ("10.112.0.0/12", 24));
        let shared = Settings::default().network().net().expect("the shared subnet");
        assert!(!pool.contains(&shared.network()) && !shared.contains(&pool.network()));
        let set = Settings::read(file("app_subnets = \"10.9.0.0/16\"\napp_subnet_prefix = 26\n").path()).expect("read");
        assert_eq!(set.app_subnets().expect("fits").1, 26);
        let bad = Settings::read(file("app_subnets = \"10.9.0\"\n").path()).expect_err("not a subnet").to_string();
        assert!(bad.contains("line 1: ") && !bad.contains('\n'), "{bad}");
        let wide = Settings { app_subnet_prefix: Some(8), ..Settings::default() };
        let err = Settings::load(&Settings { config: Some(file("").path().into()), ..wide }).expect_err("too wide");
        assert_eq!(err.to_string(), "app_subnet_prefix 8 does not fit app_subnets 10.112.0.0/12: use 12 to 30");
    }

    #[test]
    fn an_app_url_is_its_host_on_the_router_with_the_port_unless_80() {
        let on = |listen: &str| Settings {
            router: RouterSettings { http_listen: Some(listen.into()), ..RouterSettings::default() },
            ..Settings::default()
        };
        assert_eq!(on("0.0.0.0:80").app_url("hello").as_deref(), Some("http://hello.localhost/"));
        let custom = Settings { domain: Some("Apps.Example.com.".into()), ..on("127.0.0.1:8080") };
        assert_eq!(custom.app_url("hello").as_deref(), Some("http://hello.apps.example.com:8080/"));
        assert_eq!(on("off").app_url("hello"), None);
    }

    #[test]
    fn per_source_penalties_and_exempt_lists_read_as_openssh_writes_them() {
        let penalties: Penalties = "noauth:2 max:60s".parse().expect("penalties");
        assert_eq!(penalties, Penalties { noauth: 2, max: 60, ..Penalties::default() });
        assert_eq!("no".parse::<Penalties>().expect("off"), Penalties::OFF);
        assert_eq!("yes".parse::<Penalties>().expect("defaults"), Penalties::default());
        for bad in ["", "crash:90", "noauth", "noauth:-1", "max:x"] {
            let err = bad.parse::<Penalties>().expect_err(bad).to_string();
            assert!(err.contains("per_source_penalties") && !err.contains('\n'), "{err}");
        }
        let back: Penalties = String::from(penalties).parse().expect("written back");
        assert_eq!(back, penalties);

        let list: AddressList = "10.0.0.0/8, 192.0.2.7 2001:db8::/32".parse().expect("a list");
        assert!(list.contains([10, 1, 2, 3].into()) && list.contains([192, 0, 2, 7].into()));
        assert!(!list.contains([192, 0, 2, 8].into()) && list.contains("2001:db8::1".parse().expect("ip")));
        assert!(list.contains("::ffff:10.0.0.1".parse().expect("a v4-mapped address")));
        assert!("none".parse::<AddressList>().expect("none").is_empty());
        assert!("10.0.0.0/33".parse::<AddressList>().is_err());
        let loopback = AddressList::loopback();
        assert!(loopback.contains([127, 0, 0, 2].into()) && loopback.contains("::1".parse().expect("ip")));
        assert!(!loopback.contains([10, 0, 0, 1].into()));
        let toml = file("per_source_penalties = \"no\"\nper_source_penalty_exempt_list = \"none\"\n");
        let settings = Settings::read(toml.path()).expect("settings");
        assert!(settings.per_source_penalties().is_off() && settings.per_source_penalty_exempt_list().is_empty());
    }

    #[test]
    fn max_connections_fit_the_open_file_limit_with_room_for_ssh() {
        let settings = Settings::default();
        assert_eq!(settings.max_connections(1024), 384);
        assert_eq!(settings.max_connections(65_536), 30_720);
        assert_eq!(settings.max_connections(256), 64, "never below 64");
        let set = Settings {
            router: RouterSettings { max_connections: Some(10), ..RouterSettings::default() },
            ..Settings::default()
        };
        assert_eq!(set.max_connections(1024), 10);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let toml = file("registry_password = \"hunter2\"\nstore_password = \"s3cret\"\n");
        let settings = Settings::read(toml.path()).expect("settings");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
        assert_eq!(settings.registry_password.as_ref().map(Secret::expose), Some("hunter2"));
    }

    #[test]
    fn settings_survive_the_hand_over_to_the_hook_whole() {
        let settings = Settings {
            registry: Some("r:5000".into()),
            runner: Some(RunnerKind::Docker),
            publish_rollout: Some("shop/prod".parse().expect("target")),
            registry_password: Some(Secret::from("pw".to_owned())),
            config: Some("/etc/nap/nap.toml".into()),
            ..Settings::default()
        };
        let json = serde_json::to_string(&settings).expect("encode");
        let back: Settings = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, settings);
    }
}
