//! The local command line: `nap serve`, `nap keys ...`, and the entry points
//! that OpenSSH and git call (`ssh-command`, `hook`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nap", version, about = "git push to deploy, ssh to operate", propagate_version = true)]
pub struct Cli {
    // Before the settings, so that their help heading does not take it.
    #[command(flatten)]
    pub output: crate::commands::OutputArgs,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand shares. Each also comes from the environment and
/// from `nap.toml`; a flag beats the environment, which beats the file.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Settings (also NAP_* variables or nap.toml)")]
pub struct GlobalArgs {
    /// Settings file [default: /etc/nap/nap.toml, if it exists]
    #[arg(long, global = true, env = "NAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where nap keeps repos, state and its host key [default: /var/lib/nap]
    #[arg(long, global = true, env = "NAP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where state lives: embedded (under the data directory) or etcd://HOST:PORT[,HOST:PORT...]
    #[arg(long, global = true, env = "NAP_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Root of the commiter flow's keys in the store [default: /commiter]
    #[arg(long, global = true, env = "NAP_COMMITER_ROOT", value_name = "PATH")]
    pub commiter_root: Option<String>,
    /// Registry that images are pushed to, e.g. registry.example.com:5000
    #[arg(long, global = true, env = "NAP_REGISTRY", value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// Host name put in app URLs [default: this machine's host name]
    #[arg(long, global = true, env = "NAP_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
    /// Seconds a new release gets to answer HTTP before the deploy fails [default: 30]
    #[arg(long, global = true, env = "NAP_CHECK_TIMEOUT", value_name = "SECS")]
    pub check_timeout: Option<u64>,
    /// How releases run: docker, systemd or kubernetes [default: systemd if the system bus has it, else docker]
    #[arg(long, global = true, env = "NAP_RUNNER", value_name = "RUNNER")]
    pub runner: Option<nap_runner::RunnerKind>,
    /// D-Bus address of the system bus, e.g. unix:path=/run/dbus/system_bus_socket [default: the system's]
    #[arg(long, global = true, env = "NAP_SYSTEM_BUS", value_name = "ADDRESS")]
    pub system_bus: Option<String>,
    /// Where the systemd runner writes units [default: /etc/systemd/system]
    #[arg(long, global = true, env = "NAP_UNIT_DIR", value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// Kubernetes runner: deployment (one Deployment per app) or rc (a ReplicationController per release) [default: deployment]
    #[arg(long, global = true, env = "NAP_K8S_KIND", value_name = "KIND")]
    pub k8s_kind: Option<nap_runner::WorkloadKind>,
    /// Kubernetes runner: the kubeconfig kubectl uses [default: kubectl's own]
    #[arg(long, global = true, env = "NAP_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes runner: the kubeconfig context [default: its current context]
    #[arg(long, global = true, env = "NAP_K8S_CONTEXT", value_name = "CONTEXT")]
    pub k8s_context: Option<String>,
    /// Kubernetes runner: the namespace releases go to [default: the context's]
    #[arg(long, global = true, env = "NAP_K8S_NAMESPACE", value_name = "NAMESPACE")]
    pub k8s_namespace: Option<String>,
}

// `ssh-command` is the name OpenSSH's forced command uses.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SSH gateway that takes pushes and commands
    Serve(ServeArgs),
    /// Entry point for OpenSSH's forced command: runs $SSH_ORIGINAL_COMMAND as key NAME
    SshCommand {
        /// The key's name, as added with `nap keys add`
        #[arg(long, value_name = "NAME")]
        key: String,
    },
    /// Watch keys in the store, render templates into files, check and reload (confd's job)
    Watch(nap_hooks::watcher::WatchArgs),
    /// Entry points for git hooks (installed by nap; not for people)
    #[command(subcommand, hide = true)]
    Hook(HookCommand),
    #[command(flatten)]
    Operate(crate::commands::Operate),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the SSH gateway listens on [default: 0.0.0.0:2222]
    #[arg(long, env = "NAP_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Seconds that running pushes get to finish after SIGTERM [default: 60]
    #[arg(long, env = "NAP_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Deploy what is pushed to master or main (git runs this before updating refs)
    PreReceive,
}
