//! `nap watch --exec -- CMD ARGS...`: template hooks as an image's
//! entrypoint. Every template is rendered before the app starts; the app
//! runs as a child that gets every signal meant for it; while it runs,
//! changes are rendered and reloaded; the app's exit status is ours. As PID 1
//! of a container it also reaps the orphans that land on it.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::children;
use crate::watcher::{WatchError, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    // The causes are in the messages, not chained: these end up as one
    // line through anyhow, which would print a chained cause twice.
    #[error("the first render failed, so {app} was not started: {cause}")]
    FirstRender { app: String, cause: WatchError },
    #[error("cannot start {app}: {cause}")]
    Spawn { app: String, cause: std::io::Error },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// The signals a container's PID 1 is sent for its app: passed on as they come.
const FORWARDED: [(SignalKind, Signal); 6] = [
    (SignalKind::terminate(), Signal::SIGTERM),
    (SignalKind::interrupt(), Signal::SIGINT),
    (SignalKind::hangup(), Signal::SIGHUP),
    (SignalKind::quit(), Signal::SIGQUIT),
    (SignalKind::user_defined1(), Signal::SIGUSR1),
    (SignalKind::user_defined2(), Signal::SIGUSR2),
];

/// Renders, runs `command`, watches while it runs; answers its exit status
/// (128 + N when a signal N ended it, as a shell reports it).
pub async fn run(watcher: Arc<Watcher>, command: &[String]) -> Result<u8, EntrypointError> {
    let app = command.first().cloned().unwrap_or_default();
    let first = async {
        watcher.clear_stale().await?;
        // Nothing runs yet that a reload_cmd could reload.
        watcher.once_with(crate::apply::Reload::Skip).await
    };
    first.await.map_err(|cause| EntrypointError::FirstRender { app: app.clone(), cause })?;
    // Listening for SIGCHLD before the child exists, so no exit is missed.
    let mut children = signal(SignalKind::child()).map_err(EntrypointError::Signals)?;
    let mut forwarded = Vec::new();
    for (kind, signal_to_pass) in FORWARDED {
        forwarded.push((signal(kind).map_err(EntrypointError::Signals)?, signal_to_pass));
    }
    let child = std::process::Command::new(&app)
        .args(&command[1..])
        .spawn()
        .map_err(|cause| EntrypointError::Spawn { app: app.clone(), cause })?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    info!(%app, pid = pid.as_raw(), "started");

    let shutdown = CancellationToken::new();
    let watching = tokio::spawn({
        let (watcher, shutdown) = (Arc::clone(&watcher), shutdown.clone());
        async move {
            // The environment does not change under a running process.
            if watcher.is_watchable() {
                watcher.watch(shutdown).await;
            }
        }
    });
    for (mut incoming, signal_to_pass) in forwarded {
        tokio::spawn(async move {
            while incoming.recv().await.is_some() {
                let _ = kill(pid, signal_to_pass);
            }
        });
    }
    // SIGCHLDs coalesce, and a zombie left while a command's owner had not
    // reaped it yet gets no second one: look again now and then.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let status = loop {
        tokio::select! {
            _ = children.recv() => {}
            _ = tick.tick() => {}
        }
        if let Some(status) = reap(pid) {
            break status;
        }
    };
    shutdown.cancel();
    let _ = watching.await;
    info!(%app, status, "exited");
    Ok(status)
}

/// Reaps every child that has exited but the owned ones (orphans too, when
/// this is PID 1); the app's status if it was among them.
fn reap(app: Pid) -> Option<u8> {
    let owned = children::owned();
    let mut app_status = None;
    loop {
        // Peek first (WNOWAIT): an owned child is left for its owner.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, flags) {
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return app_status,
            },
            Err(nix::errno::Errno::ECHILD) => return app_status,
            Err(err) => {
                warn!(%err, "waitid");
                return app_status;
            }
        };
        if owned.contains(&pid.as_raw()) {
            return app_status;
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == app => app_status = Some(u8::try_from(code).unwrap_or(1)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == app => {
                app_status = Some(128u8.saturating_add(signal as u8));
            }
            Ok(_) => {}
            Err(err) => {
                warn!(%err, "waitpid");
                return app_status;
            }
        }
    }
}
