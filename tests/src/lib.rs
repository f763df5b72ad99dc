//! The harness for nap's end-to-end tests. Everything here drives real
//! parts: the `nap` binary, the OpenSSH client and server, git, dockerd and
//! the registry. `scripts/services.sh` starts the services; each test gets its
//! own data directory, port, keys and app names, so tests run in parallel.
//! What a test makes on the shared services goes with drop guards
//! ([`Cleanup`], and [`Gateway`] for the apps and keys it was given), also
//! when an assert fails.

mod app;
mod cleanup;
mod deployed;
mod dockerd;
mod dockerhost;
mod etcd;
mod gateway;
mod http;
pub mod http2;
mod key;
mod kubectl;
mod registry;
mod sshd;
mod subnet;
mod swarm;
pub mod systemd;
pub mod tls;

use std::path::PathBuf;
use std::process::Output;

pub use app::{AppKind, AppRepo, test_upstream};
pub use cleanup::Cleanup;
pub use deployed::Deployed;
pub use dockerd::Dockerd;
pub use dockerhost::DockerHost;
pub use etcd::{EtcdTls, PrivateEtcd};
pub use gateway::{Gateway, GatewayBuilder, rev_parse};
pub use http::{KeepAlive, WsClient, connect, download, get, get_host, raw, wait_for_body};
pub use key::{Key, ssh_options};
pub use kubectl::{KubectlCall, StandInCluster, kubectl_words};
pub use registry::AuthRegistry;
pub use sshd::Sshd;
pub use swarm::{Swarm, SwarmNode};
pub use systemd::SystemdHost;

/// The registry the services script runs.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// The `nap` binary under test: `NAP_BIN`, or the one cargo built beside
/// this test (run `cargo build -p nap` first; `scripts/test.sh` does).
pub fn nap_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NAP_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("nap");
    assert!(bin.exists(), "{} is missing: run `cargo build -p nap` (scripts/test.sh does)", bin.display());
    bin
}

/// A name no other test uses, for apps and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// A command's outcome, with its output as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the whole output unless the command succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "command failed ({:?})\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn assert_failed_with(&self, text: &str) -> &Self {
        assert!(!self.ok(), "command succeeded, expected failure with {text:?}\nstderr:\n{}", self.stderr);
        assert!(
            self.stderr.contains(text) || self.stdout.contains(text),
            "expected {text:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The app URL the deploy printed last.
    pub fn url(&self) -> Option<String> {
        self.stderr.lines().rev().find_map(|line| {
            let rest = line.trim_end().split("=====> ").nth(1)?;
            Some(rest.trim().to_owned())
        })
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `docker ARGS` and answers its output.
pub fn docker(args: &[&str]) -> Run {
    std::process::Command::new("docker").args(args).output().expect("run docker").into()
}

/// Names of the containers nap runs for `app`.
pub fn containers_of(app: &str) -> Vec<String> {
    let run = docker(&["ps", "-a", "--filter", &format!("label=nap.app={app}"), "--format", "{{.Names}}"]);
    run.stdout.lines().map(str::to_owned).collect()
}

/// Names of the one-off containers (`run`, the release phase) of `app`.
pub fn one_offs_of(app: &str) -> Vec<String> {
    let run = docker(&["ps", "-a", "--filter", &format!("label=nap.one-off={app}"), "--format", "{{.Names}}"]);
    run.stdout.lines().map(str::to_owned).collect()
}

/// Removes every container of `app` at once, as a lost host would.
pub fn remove_app_containers(app: &str) {
    for name in containers_of(app) {
        docker(&["rm", "-f", &name]);
    }
}

/// Tags of `REGISTRY/app`, as the registry lists them.
pub fn registry_tags(app: &str) -> Vec<String> {
    let body = get(&format!("http://{REGISTRY}/v2/{app}/tags/list")).map(|(_, body)| body).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    value["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Picks a loopback port that is free right now.
/// Whether the other end closed `stream` within `within` (what it sent
/// first is read away), rather than kept it open.
pub fn closed_by_peer(stream: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::{ErrorKind, Read};
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return true,
            Err(_) => return false,
        }
    }
}

/// How many files the process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// The etcd the services script runs (`NAP_TEST_ETCD` to use another).
pub fn etcd_endpoint() -> String {
    std::env::var("NAP_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into())
}

/// Runs the real `etcdctl` (v3 API) against [`etcd_endpoint`].
pub fn etcdctl(args: &[&str]) -> Run {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd_endpoint()])
        .args(args)
        .output()
        .expect("run etcdctl")
        .into()
}
