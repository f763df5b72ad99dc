//! App repos made by `tests/fixtures/app.sh`, pushed with the real git.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::gateway::rev_parse;
use crate::{Gateway, Key, Run};

/// Which app the fixture script makes; see `tests/fixtures/app.sh`.
#[derive(Debug, Clone, Copy)]
pub enum AppKind {
    Web,
    Slow,
    Exposed,
    NoDockerfile,
    BrokenBuild,
    Exits,
    Deaf,
    /// Serves on port 8080 whatever `PORT` says.
    FixedPort,
    /// Like `Web`, but its build sleeps two minutes.
    SlowBuild,
    /// A Procfile app: `web` (`/cgi-bin/host` answers its host name),
    /// `worker` and a `release` phase; app.json runs one worker and checks
    /// `/health`.
    Procfile,
    /// `nap-test-upstream` ([`test_upstream`]): keep-alive, WebSockets,
    /// long downloads, slow answers; `/` answers the committed file `reply`.
    Upstream,
}

impl AppKind {
    fn arg(self) -> &'static str {
        match self {
            AppKind::Web => "web",
            AppKind::Slow => "slow",
            AppKind::Exposed => "exposed",
            AppKind::NoDockerfile => "no-dockerfile",
            AppKind::BrokenBuild => "broken-build",
            AppKind::Exits => "exits",
            AppKind::Deaf => "deaf",
            AppKind::FixedPort => "fixed-port",
            AppKind::SlowBuild => "slow-build",
            AppKind::Procfile => "procfile",
            AppKind::Upstream => "upstream",
        }
    }
}

/// The static `nap-test-upstream` (the app in `tests/upstream`) that
/// [`AppKind::Upstream`] images run: `NAP_TEST_UPSTREAM` if set, else built
/// by `scripts/build-test-upstream.sh`, once per test process.
pub fn test_upstream() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("NAP_TEST_UPSTREAM") {
            return path.into();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-upstream.sh");
        let built = Command::new(script).stderr(Stdio::inherit()).output().expect("run scripts/build-test-upstream.sh");
        assert!(built.status.success(), "scripts/build-test-upstream.sh failed");
        let path = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
        assert!(path.is_file(), "scripts/build-test-upstream.sh printed {}, which is no file", path.display());
        path
    })
    .clone()
}

pub struct AppRepo {
    _dir: TempDir,
    pub path: PathBuf,
}

impl AppRepo {
    pub fn new(kind: AppKind) -> AppRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sh");
        let mut command = Command::new(script);
        command.arg(&path).arg(kind.arg());
        if let AppKind::Upstream = kind {
            command.env("NAP_TEST_UPSTREAM", test_upstream());
        }
        let status = command.status().expect("run fixtures/app.sh");
        assert!(status.success(), "fixtures/app.sh {} failed", kind.arg());
        AppRepo { _dir: dir, path }
    }

    fn git(&self) -> Command {
        let mut git = Command::new("git");
        git.current_dir(&self.path);
        git
    }

    /// Writes `file` (new or not) and commits it.
    pub fn commit(&self, file: &str, content: &str) -> String {
        std::fs::write(self.path.join(file), content).expect("write file");
        let run: Run = self.git().args(["add", "--", file]).output().expect("git").into();
        run.assert_ok();
        let run: Run =
            self.git().args(["commit", "-q", "-am", &format!("change {file}")]).output().expect("git").into();
        run.assert_ok();
        self.head()
    }

    /// Replaces the whole tree with the one `kind` makes, as a new commit.
    pub fn become_kind(&self, kind: AppKind) -> String {
        let other = AppRepo::new(kind);
        for entry in ["Dockerfile", "index.html", "env.cgi", "reply", "nap-test-upstream"] {
            let _ = std::fs::remove_file(self.path.join(entry));
            if other.path.join(entry).exists() {
                std::fs::copy(other.path.join(entry), self.path.join(entry)).expect("copy");
            }
        }
        let run: Run = self.git().args(["add", "-A"]).output().expect("git").into();
        run.assert_ok();
        let run: Run = self.git().args(["commit", "-q", "-m", "become another app"]).output().expect("git").into();
        run.assert_ok();
        self.head()
    }

    /// Commits `file` holding `bytes` zero bytes (made sparse, so only git
    /// spends the time), and answers the commit.
    pub fn commit_zeros(&self, file: &str, bytes: u64) -> String {
        std::fs::File::create(self.path.join(file)).and_then(|f| f.set_len(bytes)).expect("write zeros");
        for args in [&["add", file][..], &["commit", "-q", "-m", &format!("add {file}")]] {
            let run: Run = self.git().args(args).output().expect("git").into();
            run.assert_ok();
        }
        self.head()
    }

    /// Runs `git ARGS` in the repo, with `input` on its standard input.
    pub fn git_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .git()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git");
        child.stdin.take().expect("stdin").write_all(input).expect("write to git");
        child.wait_with_output().expect("git").into()
    }

    /// A commit that changes nothing in the tree.
    pub fn commit_empty(&self) -> String {
        let run: Run = self.git().args(["commit", "-q", "--allow-empty", "-m", "empty"]).output().expect("git").into();
        run.assert_ok();
        self.head()
    }

    pub fn head(&self) -> String {
        rev_parse(&self.path.join(".git"), "HEAD").expect("HEAD")
    }

    fn push_command(&self, key: &Key, url: &str, refspec: &str) -> Command {
        let mut git = self.git();
        git.env("GIT_SSH_COMMAND", key.ssh_command()).args(["push", url, refspec]);
        git
    }

    /// `git push URL REFSPEC` over the real ssh.
    pub fn push_to(&self, key: &Key, url: &str, refspec: &str) -> Run {
        self.push_command(key, url, refspec).output().expect("git push").into()
    }

    /// Pushes `refspec` to `app` on `gateway` (whose drop removes the app).
    pub fn push(&self, gateway: &Gateway, key: &Key, app: &str, refspec: &str) -> Run {
        gateway.track_app(app);
        self.push_to(key, &gateway.remote(app), refspec)
    }

    /// Starts a push in the background, in a process group of its own so
    /// that a test can kill git and its ssh together.
    pub fn spawn_push(&self, gateway: &Gateway, key: &Key, app: &str, refspec: &str) -> Child {
        use std::os::unix::process::CommandExt;
        gateway.track_app(app);
        self.push_command(key, &gateway.remote(app), refspec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn git push")
    }
}
