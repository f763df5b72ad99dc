//! `watch` as a command, shared by `nap watch` and the small `nap-watch`
//! binary: the entrypoint with `--exec`, else the watcher until SIGTERM or
//! Ctrl-C (or once).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::entrypoint::{self, EntrypointError};
use crate::source::Source;
use crate::watcher::{WatchArgs, WatchError, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Entrypoint(#[from] EntrypointError),
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
}

/// Runs `watch` as `args` say, reading from the environment (`--env`) or
/// the store `store` names; the exit status.
pub async fn watch(args: &WatchArgs, store: &nap_state::StoreSettings) -> Result<u8, CommandError> {
    let source = if args.env { Source::Env } else { Source::Store(Arc::new(store.open().await?)) };
    let watcher = Watcher::from_args(args, source)?;
    if args.exec {
        return Ok(entrypoint::run(Arc::new(watcher), &args.command).await?);
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        on_signal.cancel();
    });
    watcher.run(args, shutdown).await?;
    Ok(0)
}
