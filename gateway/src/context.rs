//! What commands run with: the process-wide [`Context`], and the client's
//! streams ([`Io`]) from whichever transport brought the command: the russh
//! gateway hands in its channel, `ssh-command` and the local CLI their stdio.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use nap_runner::{DockerRunner, RunError, Runner, RunnerChoice};
use nap_state::{DomainGrant, Lock, LockError, LockSubject, Store, StoreError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::KnownKeys;
use crate::router::access::AccessLog;
use crate::settings::Settings;

/// What every command needs, built once per process.
pub struct Context {
    pub settings: Settings,
    pub store: Store,
    /// This `nap` binary, which git hooks call back into.
    pub exe: PathBuf,
    /// The allowed SSH keys, as last read (see [`KnownKeys`]).
    pub known_keys: KnownKeys,
    /// The access log of the router in this process, if one runs here.
    pub access_log: Arc<AccessLog>,
}

/// What can keep a command from reaching the parts it runs on.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Runner(#[from] RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot locate the nap binary: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot make the data directory {dir} its owner's alone: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Makes the data directory (repos, the embedded store, logs) if need be,
/// and its owner's alone (0700), also when an older nap made it 0755.
fn owner_only_dir(dir: &std::path::Path) -> Result<(), ContextError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| ContextError::DataDir { dir: dir.display().to_string(), source })
}

impl Context {
    /// Opens the store the settings name; the data directory is made if need be.
    pub async fn open(settings: Settings) -> Result<Arc<Context>, ContextError> {
        owner_only_dir(&settings.data_dir())?;
        let store = Box::pin(settings.open_store()).await?;
        let exe = std::env::current_exe().map_err(ContextError::Exe)?;
        Ok(Arc::new(Context { settings, store, exe, known_keys: KnownKeys::default(), access_log: Arc::default() }))
    }

    /// Every host `app` answers at on the router: its own (`APP.DOMAIN`),
    /// then its domains (exact or wildcard), less any that nap keeps for
    /// another app, as the route table leaves them out.
    pub async fn app_hosts(&self, app: &str) -> Result<Vec<String>, StoreError> {
        let domain = self.settings.domain();
        let mut hosts = vec![self.settings.app_host(app)];
        let domains = self.store.domain_grants(app).await?;
        let routed = |(host, grant): &(String, DomainGrant)| {
            crate::hosts::check_reserved(host, &domain, app, *grant == DomainGrant::Admin).is_ok()
        };
        hosts.extend(domains.into_iter().filter(routed).map(|(host, _)| host));
        Ok(hosts)
    }

    /// A Docker client, connected now: commands that never touch Docker
    /// (keys, releases) do not need a daemon.
    pub async fn docker(&self) -> Result<bollard::Docker, ContextError> {
        Ok(nap_runner::connect_docker().await?)
    }

    /// This host's Docker runner: containers on their apps' networks.
    pub async fn docker_runner(&self) -> Result<DockerRunner, ContextError> {
        Ok(DockerRunner::connect(self.settings.network(), self.settings.check_timeout()).await?)
    }

    /// The runner releases go to, as the settings choose it (see
    /// [`Runner::select`]).
    pub async fn runner(&self) -> Result<Runner, ContextError> {
        let settings = &self.settings;
        let choice = RunnerChoice {
            kind: settings.runner,
            registry: settings.registry().is_some(),
            shared_network: settings.network(),
            check_timeout: settings.check_timeout(),
            systemd: settings.systemd(),
            kubernetes: settings.kubernetes(),
            swarm: settings.swarm(),
            public_host: settings.public_host(),
        };
        Ok(Box::pin(Runner::select(choice)).await?)
    }

    /// Takes the lock on `subject` for `what` (a push, a config change, a
    /// commit) by `who`, or says who holds it and on which host. An app's
    /// lock is the release flow's to take ([`crate::deploy`]).
    pub(crate) async fn lock(&self, subject: LockSubject<'_>, what: &str, who: &str) -> Result<Lock, LockError> {
        let started = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let holder = format!("{what} by {who}, pid {}, started {started}", std::process::id());
        Lock::acquire(&self.store, &self.settings.locks_dir(), subject, &holder, &self.settings.host_name()).await
    }
}

pub type Input = Box<dyn AsyncRead + Unpin + Send>;
pub type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// A command's standard streams, and a token that fires when the client is gone.
pub struct Io {
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    pub client_gone: CancellationToken,
    /// The client's terminal (`ssh -t`): its size, columns by rows, as it
    /// changes. `None`: plain streams.
    pub terminal: Option<tokio::sync::watch::Receiver<(u16, u16)>>,
    /// Whether that terminal is this process's own (behind OpenSSH, or on
    /// the host), which `run` puts in raw mode while it runs.
    pub own_terminal: bool,
}

impl Io {
    /// This process's own standard streams (the local CLI, `ssh-command`).
    /// The client is gone once the reader of standard output is.
    pub fn stdio() -> Io {
        let client_gone = CancellationToken::new();
        watch_stdout(client_gone.clone());
        Io {
            stdin: Box::new(tokio::io::stdin()),
            stdout: Box::new(tokio::io::stdout()),
            stderr: Box::new(tokio::io::stderr()),
            client_gone,
            terminal: None,
            own_terminal: false,
        }
    }

    /// [`Io::stdio`], with this process's terminal, if it has one, for the
    /// commands that use one (`run`).
    pub fn stdio_with_terminal() -> Io {
        let terminal = crate::terminal::size();
        Io { own_terminal: terminal.is_some(), terminal, ..Io::stdio() }
    }
}

/// Cancels `gone` once the reader of this process's standard output goes
/// away: a pipe whose other end closed reports `POLLERR`, a terminal that
/// hung up `POLLHUP`. Under `ssh-command` that is the SSH client leaving
/// (sshd closes the pipes), which nothing else tells a command that writes
/// nothing meanwhile (`logs --follow` of a quiet app). A thread of its own,
/// blocked in poll(2) asking for no event but those.
fn watch_stdout(gone: CancellationToken) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let watch = move || {
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
        let closed = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) if fds[0].revents().is_some_and(|events| events.intersects(closed)) => {
                    gone.cancel();
                    return;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    };
    // Without a thread to spare, the client's going is seen at the next write.
    let _ = std::thread::Builder::new().name("nap-stdout-watch".into()).spawn(watch);
}
