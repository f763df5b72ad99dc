//! Effective settings: `nap.toml`, overridden by the environment and flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::GlobalArgs;

const DEFAULT_CONFIG: &str = "/etc/nap/nap.toml";
const DEFAULT_DATA_DIR: &str = "/var/lib/nap";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:2222";
const DEFAULT_CHECK_TIMEOUT: u64 = 30;
pub const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 60;
const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
const DEFAULT_DOCKER_CLI: &str = "/usr/bin/docker";

/// The settings file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub store_user: Option<String>,
    pub store_password: Option<String>,
    pub store_ca: Option<PathBuf>,
    pub store_cert: Option<PathBuf>,
    pub store_key: Option<PathBuf>,
    pub registry: Option<String>,
    pub registry_username: Option<String>,
    pub registry_password: Option<String>,
    pub public_host: Option<String>,
    pub check_timeout: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub runner: Option<nap_runner::RunnerKind>,
    pub system_bus: Option<String>,
    pub unit_dir: Option<PathBuf>,
    pub env_dir: Option<PathBuf>,
    pub units_dir: Option<PathBuf>,
    pub docker_cli: Option<String>,
    pub commiter_root: Option<String>,
    pub host_ip: Option<String>,
    pub node_name: Option<String>,
    pub host_name: Option<String>,
    pub network: Option<String>,
    pub network_subnet: Option<String>,
    pub kubectl: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub k8s_context: Option<String>,
    pub k8s_namespace: Option<String>,
    pub k8s_kind: Option<nap_runner::WorkloadKind>,
    pub k8s_service_type: Option<String>,
    pub k8s_replicas: Option<u32>,
    pub k8s_timeout: Option<u64>,
    pub publish_rollout: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The settings file that was read, if any; passed on to hooks.
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `None`: the embedded store under the data directory.
    pub etcd: Option<nap_state::EtcdOptions>,
    pub registry: Option<nap_builder::Registry>,
    pub public_host: String,
    pub check_timeout: Duration,
    pub listen: Option<String>,
    pub shutdown_timeout: Option<u64>,
    /// `None`: pick systemd if it is on the system bus, else Docker.
    pub runner: Option<nap_runner::RunnerKind>,
    pub systemd: nap_runner::SystemdSettings,
    /// Where the commiter flow's keys live (default `/commiter`).
    pub commiter_root: String,
    /// This host's IP for the commiter flow [default: the default route's address].
    pub host_ip: Option<String>,
    /// The Kubernetes node take-over RCs pin pods to [default: the host IP].
    pub node_name: Option<String>,
    /// This host's name among nap's hosts, as deploy locks name their holder
    /// [default: the machine's host name].
    pub host_name: String,
    /// The Docker network releases run on; alike on every host.
    pub network: nap_runner::AppNetwork,
    pub kubernetes: nap_runner::KubernetesSettings,
    /// Where each new release is announced as the CI/CD write-up's rollout
    /// key, `/k8s-deploy/PROJECT/rollout/ENV`, for template hooks elsewhere.
    pub publish_rollout: Option<RolloutTarget>,
}

/// `PROJECT/ENV` of the rollout key a release is published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTarget {
    pub project: String,
    pub env: String,
}

impl std::str::FromStr for RolloutTarget {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        match text.split_once('/') {
            Some((project, env)) if word(project) && word(env) => {
                Ok(RolloutTarget { project: project.to_owned(), env: env.to_owned() })
            }
            _ => anyhow::bail!("publish_rollout {text:?} is not PROJECT/ENV (letters, digits, - _ .)"),
        }
    }
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> Result<Settings> {
        let (config, file) = match &args.config {
            Some(path) => (Some(path.clone()), read_file(path)?),
            None if Path::new(DEFAULT_CONFIG).exists() => {
                (Some(PathBuf::from(DEFAULT_CONFIG)), read_file(Path::new(DEFAULT_CONFIG))?)
            }
            None => (None, FileSettings::default()),
        };
        let registry =
            args.registry.clone().or(file.registry).filter(|r| !r.is_empty()).map(|address| nap_builder::Registry {
                address,
                username: std::env::var("NAP_REGISTRY_USERNAME").ok().or(file.registry_username),
                password: std::env::var("NAP_REGISTRY_PASSWORD").ok().or(file.registry_password),
            });
        let data_dir: PathBuf = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let etcd = match args.store.clone().or(file.store).filter(|s| s != "embedded") {
            Some(url) => Some(nap_state::EtcdOptions {
                user: std::env::var("NAP_STORE_USER").ok().or(file.store_user),
                password: std::env::var("NAP_STORE_PASSWORD").ok().or(file.store_password),
                ca: file.store_ca,
                cert: file.store_cert,
                key: file.store_key,
                ..nap_state::EtcdOptions::from_url(&url)?
            }),
            None => None,
        };
        Ok(Settings {
            config,
            etcd,
            registry,
            public_host: args
                .public_host
                .clone()
                .or(file.public_host)
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            check_timeout: Duration::from_secs(
                args.check_timeout.or(file.check_timeout).unwrap_or(DEFAULT_CHECK_TIMEOUT),
            ),
            listen: file.listen,
            shutdown_timeout: file.shutdown_timeout,
            runner: args.runner.or(file.runner),
            systemd: nap_runner::SystemdSettings {
                bus_address: args.system_bus.clone().or(file.system_bus),
                unit_dir: args.unit_dir.clone().or(file.unit_dir).unwrap_or_else(|| DEFAULT_UNIT_DIR.into()),
                env_dir: file.env_dir.unwrap_or_else(|| data_dir.join("env")),
                template_dir: file.units_dir.clone(),
                docker_cli: file.docker_cli.unwrap_or_else(|| DEFAULT_DOCKER_CLI.into()),
            },
            commiter_root: args
                .commiter_root
                .clone()
                .or(file.commiter_root)
                .map(|root| root.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| nap_state::layout::commiter::DEFAULT_ROOT.into()),
            network: {
                let defaults = nap_runner::AppNetwork::default();
                nap_runner::AppNetwork {
                    name: file.network.unwrap_or(defaults.name),
                    subnet: file.network_subnet.unwrap_or(defaults.subnet),
                }
            },
            host_ip: file.host_ip,
            node_name: file.node_name,
            host_name: file.host_name.unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            kubernetes: {
                let defaults = nap_runner::KubernetesSettings::default();
                nap_runner::KubernetesSettings {
                    kubectl: file.kubectl.unwrap_or(defaults.kubectl),
                    kubeconfig: args.kubeconfig.clone().or(file.kubeconfig),
                    context: args.k8s_context.clone().or(file.k8s_context),
                    namespace: args.k8s_namespace.clone().or(file.k8s_namespace),
                    kind: args.k8s_kind.or(file.k8s_kind).unwrap_or(defaults.kind),
                    service_type: file.k8s_service_type.unwrap_or(defaults.service_type),
                    replicas: file.k8s_replicas.unwrap_or(defaults.replicas),
                    rollout_timeout: file.k8s_timeout.map_or(defaults.rollout_timeout, Duration::from_secs),
                    units_dir: file.units_dir.clone(),
                }
            },
            publish_rollout: file.publish_rollout.as_deref().map(str::parse).transpose()?,
            data_dir,
        })
    }

    /// This host's IP: `host_ip`, else the address of the default route.
    pub fn this_host_ip(&self) -> Option<String> {
        self.host_ip.clone().or_else(default_route_address)
    }

    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.data_dir.join("locks")
    }

    /// Opens the store the settings name.
    pub async fn open_store(&self) -> Result<nap_state::Store, nap_state::StoreError> {
        match &self.etcd {
            Some(etcd) => nap_state::Store::open_etcd(etcd).await,
            None => nap_state::Store::open_embedded(&self.data_dir.join("state.db")),
        }
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }

    /// The environment that hands these settings on to a child `nap`
    /// (git's hooks), so that flags given to `nap serve` reach them too.
    /// Registry credentials are not included: the child reads them where
    /// this process did.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NAP_DATA_DIR", self.data_dir.display().to_string()),
            ("NAP_PUBLIC_HOST", self.public_host.clone()),
            ("NAP_CHECK_TIMEOUT", self.check_timeout.as_secs().to_string()),
        ];
        if let Some(config) = &self.config {
            env.push(("NAP_CONFIG", config.display().to_string()));
        }
        if let Some(registry) = &self.registry {
            env.push(("NAP_REGISTRY", registry.address.clone()));
        }
        if let Some(etcd) = &self.etcd {
            env.push(("NAP_STORE", format!("etcd://{}", etcd.endpoints.join(","))));
        }
        if let Some(runner) = self.runner {
            env.push(("NAP_RUNNER", runner.to_string()));
        }
        if let Some(bus) = &self.systemd.bus_address {
            env.push(("NAP_SYSTEM_BUS", bus.clone()));
        }
        env.push(("NAP_UNIT_DIR", self.systemd.unit_dir.display().to_string()));
        let kubernetes = &self.kubernetes;
        if let Some(kubeconfig) = &kubernetes.kubeconfig {
            env.push(("NAP_KUBECONFIG", kubeconfig.display().to_string()));
        }
        if let Some(context) = &kubernetes.context {
            env.push(("NAP_K8S_CONTEXT", context.clone()));
        }
        if let Some(namespace) = &kubernetes.namespace {
            env.push(("NAP_K8S_NAMESPACE", namespace.clone()));
        }
        env.push(("NAP_K8S_KIND", kubernetes.kind.to_string()));
        env
    }
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

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading settings file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("settings file {}", path.display()))
}
