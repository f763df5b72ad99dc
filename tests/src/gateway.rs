//! A real `nap serve` with its own data directory, settings file and port.
//! When it drops, it stops with every process under it, and what its test
//! deployed and wrote goes: containers and images of its apps, and on the
//! shared etcd their keys and the SSH keys added through it.

use std::fmt::Write as _;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use nap_state::layout;

use crate::key::{Key, ssh_options};
use crate::{Cleanup, REGISTRY, Run, etcd_endpoint, free_port, nap_bin};

pub struct Gateway {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// Whether the store is the etcd every test shares: then the keys of
    /// this test's apps and SSH keys are deleted by name when it drops.
    shared_etcd: bool,
    /// `prlimit` options that cap `nap serve` and all it runs (its hooks):
    /// `--data=BYTES`, `--nofile=N:N`.
    caps: Vec<String>,
    /// Where its router listens, HTTP and HTTPS, when it routes.
    router: Option<(String, String)>,
    cleanup: Cleanup,
}

/// How a test's `nap serve` starts: `Gateway::builder()`, then what the
/// test needs of it, then [`GatewayBuilder::start`].
#[derive(Default)]
#[must_use]
pub struct GatewayBuilder {
    settings: String,
    env: Vec<(String, String)>,
    /// The router on HTTP and HTTPS ports of its own.
    routed: bool,
    /// `prlimit` options (`--data=BYTES`, `--nofile=SOFT:HARD`).
    caps: Vec<String>,
}

impl GatewayBuilder {
    /// Pushes images to the test registry.
    pub fn registry(self) -> Self {
        self.settings(&format!("registry = \"{REGISTRY}\"\n"))
    }

    /// Extra lines for its `nap.toml`.
    pub fn settings(mut self, lines: &str) -> Self {
        self.settings.push_str(lines);
        if !self.settings.is_empty() && !self.settings.ends_with('\n') {
            self.settings.push('\n');
        }
        self
    }

    /// Extra environment for it.
    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Its router on HTTP and HTTPS ports of its own (and the test
    /// registry): [`Gateway::http`] and [`Gateway::https`] say where.
    pub fn routed(mut self) -> Self {
        self.routed = true;
        self
    }

    /// It and everything it runs, pushes' hooks included, may map at most
    /// `bytes` of data (`prlimit --data`).
    pub fn data_limit(mut self, bytes: u64) -> Self {
        self.caps.push(format!("--data={bytes}"));
        self
    }

    /// Its open-file limit: `soft` and `hard` (`prlimit --nofile`); nap may
    /// raise its soft limit up to the hard one.
    pub fn open_files(mut self, soft: u64, hard: u64) -> Self {
        self.caps.push(format!("--nofile={soft}:{hard}"));
        self
    }

    /// Starts it, and waits until it listens.
    pub fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut extra = self.settings;
        let router = self.routed.then(|| (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())));
        if let Some((http, https)) = &router {
            extra = format!("registry = \"{REGISTRY}\"\nhttp_listen = \"{http}\"\nhttps_listen = \"{https}\"\n{extra}");
        }
        // Many gateways run at once: the router (and its HTTPS) is off
        // unless a test asks for it.
        let mut off = String::new();
        for setting in ["http_listen", "https_listen"] {
            if !extra.contains(&format!("{setting} =")) {
                let _ = writeln!(off, "{setting} = \"off\"");
            }
        }
        // A test may put the data elsewhere (a small filesystem of its own).
        let data_line =
            if extra.contains("data_dir =") { String::new() } else { format!("data_dir = \"{}\"\n", data.display()) };
        let settings =
            format!("{data_line}public_host = \"127.0.0.1\"\ncheck_timeout = 8\nshutdown_timeout = 30\n{off}{extra}");
        std::fs::write(dir.path().join("nap.toml"), settings).expect("write nap.toml");
        let shared = format!("etcd://{}", etcd_endpoint());
        let shared_etcd = extra.contains(&shared) || self.env.iter().any(|(_, value)| value.contains(&shared));
        let mut gateway = Gateway {
            dir,
            port: free_port(),
            child: None,
            env: self.env,
            shared_etcd,
            caps: Vec::new(),
            router,
            cleanup: Cleanup::new(),
        };
        gateway.spawn();
        // Under caps, once it has made its data (its host key, the store)
        // without them.
        if !self.caps.is_empty() {
            gateway.terminate();
            gateway.caps = self.caps;
            gateway.spawn();
        }
        gateway
    }
}

impl Gateway {
    /// How a test's `nap serve` starts.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// `nap serve` as most tests want it: pushing images to the test
    /// registry, its router off (`Gateway::builder().registry().start()`).
    pub fn start() -> Gateway {
        Self::builder().registry().start()
    }

    /// Where its router listens for HTTP (`127.0.0.1:PORT`), once
    /// [`GatewayBuilder::routed`].
    pub fn http(&self) -> String {
        self.router.as_ref().expect("a routed gateway").0.clone()
    }

    /// Where its router listens for HTTPS, once [`GatewayBuilder::routed`].
    pub fn https(&self) -> String {
        self.router.as_ref().expect("a routed gateway").1.clone()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).expect("serve log");
        let mut command = if self.caps.is_empty() {
            self.command()
        } else {
            let mut prlimit = Command::new("prlimit");
            prlimit.args(&self.caps).arg("--").arg(nap_bin());
            self.settings_of(prlimit)
        };
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nap serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nap serve did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nap` with this gateway's settings, for local admin commands.
    pub fn command(&self) -> Command {
        self.settings_of(Command::new(nap_bin()))
    }

    /// `command` (nap, or what runs it) with this gateway's settings.
    fn settings_of(&self, mut command: Command) -> Command {
        command.arg("--config").arg(self.config_path());
        for var in ["NAP_CONFIG", "NAP_DATA_DIR", "NAP_REGISTRY", "NAP_PUBLIC_HOST", "NAP_CHECK_TIMEOUT", "NAP_LISTEN"]
        {
            command.env_remove(var);
        }
        command
    }

    /// Runs a local `nap ARGS`, with `stdin` as its input.
    pub fn nap(&self, args: &[&str], stdin: &str) -> Run {
        self.track_writes(args);
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nap");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait for nap").into()
    }

    /// An admin key added under `name`: it may push and operate every app.
    pub fn user(&self, name: &str) -> Key {
        let key = Key::generate();
        self.nap(&["keys", "add", name, "--admin"], &key.public_text()).assert_ok();
        key
    }

    /// A non-admin key added under `name`, allowed only `apps`.
    pub fn user_for(&self, name: &str, apps: &[&str]) -> Key {
        let key = Key::generate();
        let apps = apps.join(",");
        let mut args = vec!["keys", "add", name];
        if !apps.is_empty() {
            args.extend(["--apps", &apps]);
        }
        self.nap(&args, &key.public_text()).assert_ok();
        key
    }

    /// Runs `ssh USER@gateway COMMAND` with the real OpenSSH client.
    pub fn ssh(&self, key: &Key, user: &str, command: &[&str]) -> Run {
        self.ssh_with_input(key, user, command, "")
    }

    /// `ssh USER@gateway COMMAND`, with `input` on its standard input.
    pub fn ssh_with_input(&self, key: &Key, user: &str, command: &[&str], input: &str) -> Run {
        let mut child = self.ssh_command(key, user, command).spawn().expect("run ssh");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait for ssh").into()
    }

    /// The `ssh` command for `COMMAND`, with piped streams, not yet started.
    pub fn ssh_command(&self, key: &Key, user: &str, command: &[&str]) -> Command {
        self.ssh_command_with(key, user, &[], command)
    }

    /// [`Self::ssh_command`] with more options for the client (`-tt`).
    pub fn ssh_command_with(&self, key: &Key, user: &str, options: &[&str], command: &[&str]) -> Command {
        self.track_writes(command);
        let mut ssh = Command::new("ssh");
        ssh.args(ssh_options(&key.private))
            .args(options)
            .args(["-p", &self.port.to_string(), &format!("{user}@127.0.0.1")])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ssh
    }

    /// Notes the apps and keys a command may create (`apps create NAME`,
    /// `keys add NAME`), so that they go when the gateway does.
    fn track_writes(&self, args: &[&str]) {
        for words in args.windows(3) {
            match words {
                ["apps", "create", app] => self.track_app(app),
                ["keys", "add", name] => self.track_key(name),
                _ => {}
            }
        }
    }

    /// `app` is this test's: its containers and images go when the gateway
    /// drops, and its keys too on the shared etcd. Pushes call this.
    pub fn track_app(&self, app: &str) {
        self.cleanup.app(app);
        if self.shared_etcd {
            self.cleanup.etcd_prefix(layout::app(app)).etcd_key(layout::lock(app)).subnet_claims(app);
        }
    }

    /// The SSH key `name` is this test's: on the shared etcd it is deleted
    /// when the gateway drops (elsewhere it lives in the data directory).
    pub fn track_key(&self, name: &str) {
        if self.shared_etcd {
            self.cleanup.etcd_key(layout::ssh_key(name));
        }
    }

    /// More that goes when this gateway does, after it has stopped: a
    /// commiter root, containers and images the test made beside it.
    pub fn cleanup(&self) -> &Cleanup {
        &self.cleanup
    }

    pub fn remote(&self, app: &str) -> String {
        format!("ssh://iwanna@127.0.0.1:{}/{app}", self.port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nap.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn repo_path(&self, app: &str) -> PathBuf {
        self.data_dir().join("repos").join(format!("{app}.git"))
    }

    pub fn lock_path(&self, app: &str) -> PathBuf {
        self.data_dir().join("locks").join(format!("{app}.lock"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The gateway's log so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The gateway's log once `done` holds of it, or after 5 s: nap serve
    /// writes its log from a thread of its own, a moment after the fact.
    pub fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the gateway to exit.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(i32::try_from(child.id()).expect("a pid")), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("nap serve did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host dies: `kill -9` of the gateway and every process under it
    /// (the pushes it runs, their hooks), all at once.
    pub fn kill_host(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let mut doomed = vec![child.id()];
        let mut index = 0;
        while index < doomed.len() {
            doomed.extend(children_of(doomed[index]));
            index += 1;
        }
        for pid in &doomed {
            let _ = kill(Pid::from_raw(i32::try_from(*pid).expect("a pid")), Signal::SIGSTOP);
        }
        for pid in &doomed {
            let _ = kill(Pid::from_raw(i32::try_from(*pid).expect("a pid")), Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    /// SIGKILLs `nap serve` alone, as `kill -9 PID` does: what it runs (a
    /// push's git and its hook) goes on, orphaned.
    pub fn kill_serve(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// The SHA a branch of the app's repo points at, if any.
    pub fn branch_sha(&self, app: &str, branch: &str) -> Option<String> {
        rev_parse(&self.repo_path(app), &format!("refs/heads/{branch}"))
    }
}

/// The pids whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name may hold spaces; the fields after its `)` do not.
            let parent: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

pub fn rev_parse(git_dir: &Path, rev: &str) -> Option<String> {
    let out =
        Command::new("git").arg("--git-dir").arg(git_dir).args(["rev-parse", "--verify", "-q", rev]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // The pushes it runs go too, so that no hook deploys after the cleanup.
        self.kill_host();
        // Every app pushed here has a repo, also one pushed through OpenSSH.
        let repos = std::fs::read_dir(self.data_dir().join("repos")).into_iter().flatten().flatten();
        for repo in repos {
            if let Some(app) = repo.file_name().to_string_lossy().strip_suffix(".git") {
                self.track_app(app);
            }
        }
        // `cleanup` drops next, with the gateway's processes gone.
    }
}
