//! A second real `dockerd` in this machine's own network namespace, with its
//! own data-root, exec-root and socket, that a test may stop and start
//! again without touching the dockerd every other test uses. It manages no
//! iptables rules (the shared dockerd owns those), and its default bridge
//! is one of its own, made here: with `--bridge=none` dockerd would delete
//! `docker0`, the shared one's. Its containers' networks are plain bridges
//! this host reaches directly. It gets `nap/busybox` from the shared daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Run;
use crate::subnet::ip;

pub struct Dockerd {
    dir: TempDir,
    child: Option<Child>,
    /// Its default bridge, made before it starts and deleted after.
    bridge: String,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        // containerd's socket lives under the exec-root: keep the path short.
        let dir = tempfile::Builder::new().prefix("ndk").tempdir_in("/tmp").expect("temp dir");
        let octet = crate::subnet::claim(|octet| vec![format!("ndk{octet}"), "type".into(), "bridge".into()]);
        let bridge = format!("ndk{octet}");
        ip(&["addr", "add", &format!("10.197.{octet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut dockerd = Dockerd { dir, child: None, bridge };
        dockerd.start_again();
        let mut save =
            Command::new("docker").args(["save", "nap/busybox"]).stdout(Stdio::piped()).spawn().expect("docker save");
        let load: Run = Command::new("docker")
            .arg("--host")
            .arg(dockerd.docker_host())
            .args(["load", "-q"])
            .stdin(save.stdout.take().expect("piped"))
            .output()
            .expect("docker load")
            .into();
        assert!(save.wait().is_ok_and(|status| status.success()), "docker save nap/busybox failed");
        load.assert_ok();
        dockerd
    }

    /// Starts the stopped dockerd again, on its data (waits until it answers).
    pub fn start_again(&mut self) {
        assert!(self.try_start(), "the second dockerd did not start:\n{}", self.log_tail());
    }

    /// Starts dockerd; whether it answers within a minute.
    fn try_start(&mut self) -> bool {
        let root = self.dir.path();
        let log = std::fs::File::options().create(true).append(true).open(root.join("dockerd.log")).expect("log");
        let child = Command::new("dockerd")
            .arg(format!("--host={}", self.docker_host()))
            .arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", root.join("exec").display()))
            .arg(format!("--pidfile={}", root.join("docker.pid").display()))
            .args(["--iptables=false", "--ip-masq=false"])
            .arg(format!("--bridge={}", self.bridge))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["info"]).ok() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        true
    }

    /// Stops dockerd as `systemctl restart docker` would (SIGTERM, waiting).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `DOCKER_HOST` for a nap (or a docker CLI) that works on this dockerd.
    pub fn docker_host(&self) -> String {
        docker_host(self.dir.path())
    }

    /// `docker ARGS` against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Run {
        docker_at(self.dir.path(), args)
    }

    fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }
}

// What the tests' own dockerds share: each keeps its socket (`docker.sock`)
// and its log (`dockerd.log`) in a directory of its own.

/// `DOCKER_HOST` of the dockerd whose directory is `dir`.
pub(crate) fn docker_host(dir: &Path) -> String {
    format!("unix://{}", dir.join("docker.sock").display())
}

/// `docker ARGS` against the dockerd whose directory is `dir`.
pub(crate) fn docker_at(dir: &Path, args: &[&str]) -> Run {
    Command::new("docker").arg("--host").arg(docker_host(dir)).args(args).output().expect("run docker").into()
}

/// Starts a dockerd in network namespace `netns` (as another machine's),
/// keeping its socket, data, exec-root, pid file and log in `dir`, with
/// `extra` flags; waits until it answers. nsenter, not `ip netns exec`:
/// that remounts /sys, and dockerd needs the cgroup mounts under it.
pub(crate) fn start_in_netns(netns: &str, dir: &Path, extra: &[String]) -> Child {
    let log = std::fs::File::options().create(true).append(true).open(dir.join("dockerd.log")).expect("dockerd log");
    let dockerd = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("dockerd")
        .arg(format!("--host=unix://{}", dir.join("docker.sock").display()))
        .arg(format!("--data-root={}", dir.join("data").display()))
        .arg(format!("--exec-root={}", dir.join("exec").display()))
        .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start dockerd in a network namespace");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_at(dir, &["info"]).ok() {
        assert!(Instant::now() < deadline, "the dockerd in {netns} did not start:\n{}", log_tail(dir));
        std::thread::sleep(Duration::from_millis(250));
    }
    dockerd
}

/// The last 20 lines of the log of the dockerd whose directory is `dir`.
pub(crate) fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// SIGTERM, up to 30 s for dockerd to stop its containers, then SIGKILL.
pub(crate) fn terminate(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Its networks' bridges outlive a stopped dockerd: it removes them.
        if self.child.is_some() || self.try_start() {
            for id in self.docker(&["ps", "-aq"]).stdout.split_whitespace() {
                self.docker(&["rm", "-f", id]);
            }
            for network in self.docker(&["network", "ls", "-q", "--filter", "type=custom"]).stdout.split_whitespace() {
                self.docker(&["network", "rm", network]);
            }
        }
        self.stop();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("data")).output();
        let _ = Command::new("umount").arg("-R").arg(self.dir.path().join("exec")).output();
    }
}
