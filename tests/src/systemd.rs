//! A real systemd, as PID 1 of a container built from a debootstrap Debian
//! base (`nap/systemd:bookworm`, made by `scripts/services.sh`), reached over
//! its D-Bus socket. Its units run containers on the host's dockerd through
//! the bind-mounted Docker socket and CLI.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Run, docker, unique};

pub const IMAGE: &str = "nap/systemd:bookworm";
/// The Docker CLI the units run, bind-mounted at the same path.
pub const DOCKER_CLI: &str = "/usr/local/bin/docker";

pub struct SystemdHost {
    dir: TempDir,
    pub name: String,
}

impl SystemdHost {
    pub fn start() -> SystemdHost {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = SystemdHost { dir, name: unique("nap-systemd") };
        for sub in ["units", "bus", "env"] {
            std::fs::create_dir_all(host.dir.path().join(sub)).expect("dir");
        }
        // Keep the image's own /etc/systemd/system (its enabled units) under
        // the unit directory that replaces it.
        let copied = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker run --rm {IMAGE} tar -C /etc/systemd/system -c . | tar -C '{}' -x",
                host.unit_dir().display()
            ))
            .status()
            .expect("copy /etc/systemd/system");
        assert!(copied.success());
        let volume = |from: PathBuf, to: &str| format!("{}:{to}", from.display());
        let env_dir = host.env_dir().display().to_string();
        let run = docker(&[
            "run",
            "-d",
            "--name",
            &host.name,
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v",
            &volume(host.dir.path().join("bus"), "/run/dbus"),
            "-v",
            &volume(host.unit_dir(), "/etc/systemd/system"),
            "-v",
            &volume(host.env_dir(), &env_dir),
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &format!("{DOCKER_CLI}:{DOCKER_CLI}:ro"),
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            IMAGE,
            "/lib/systemd/systemd",
        ]);
        run.assert_ok();
        host.wait_until_running();
        host
    }

    fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.systemctl(&["is-system-running"]).stdout;
            let bus = self.dir.path().join("bus/system_bus_socket").exists();
            if bus && matches!(state.trim(), "running" | "degraded") {
                return;
            }
            assert!(Instant::now() < deadline, "systemd did not come up: {state}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn unit_dir(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    pub fn env_dir(&self) -> PathBuf {
        self.dir.path().join("env")
    }

    /// The D-Bus address of this systemd's system bus.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus/system_bus_socket").display())
    }

    /// `nap.toml` lines that make a gateway run releases here.
    pub fn settings(&self) -> String {
        format!(
            "runner = \"systemd\"\nsystem_bus = \"{}\"\nunit_dir = \"{}\"\nenv_dir = \"{}\"\ndocker_cli = \"{DOCKER_CLI}\"\n",
            self.bus_address(),
            self.unit_dir().display(),
            self.env_dir().display()
        )
    }

    /// `systemctl ARGS` as an admin on that host would run it.
    pub fn systemctl(&self, args: &[&str]) -> Run {
        let mut command = Command::new("docker");
        command.args(["exec", &self.name, "systemctl", "--no-pager"]).args(args);
        command.output().expect("docker exec systemctl").into()
    }

    /// Restarts the whole host: systemd boots again.
    pub fn reboot(&self) {
        docker(&["restart", &self.name]).assert_ok();
        self.wait_until_running();
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        // Units run their containers on the host's dockerd, where they would
        // outlive this systemd: stop the units, then remove their containers.
        let units = self.systemctl(&["list-units", "--all", "--plain", "--no-legend", "nap-*@*.service"]);
        docker(&["rm", "-f", &self.name]);
        for unit in units.stdout.lines().filter_map(|line| line.split_whitespace().next()) {
            // nap-APP@N.web.1.service runs container nap-APP-vN-web.1.
            let instance = unit.strip_suffix(".service").and_then(|u| u.split_once('@'));
            if let Some((app, id)) =
                instance.and_then(|(app, id)| Some((app, nap_runner::InstanceId::parse_suffix(id)?)))
            {
                docker(&["rm", "-f", &id.container(app.trim_start_matches("nap-"))]);
            }
        }
    }
}
