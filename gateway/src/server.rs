//! `nap serve`: the SSH gateway.
//!
//! As in warpgate, the russh [`handler::Connection`] only authenticates and
//! forwards: each exec request becomes a task ([`channel::serve_exec`]) that
//! owns its channel and is the only writer to it.

mod channel;
mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use russh::keys::{Algorithm, PrivateKey};
use russh::server::Config;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::cli::ServeArgs;
use crate::context::Context;
use crate::settings::{DEFAULT_LISTEN, DEFAULT_SHUTDOWN_TIMEOUT};

pub async fn serve(ctx: Arc<Context>, args: &ServeArgs) -> Result<()> {
    let settings = &ctx.settings;
    let listen = args.listen.clone().or(settings.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let grace =
        Duration::from_secs(args.shutdown_timeout.or(settings.shutdown_timeout).unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT));
    let host_key = load_or_create_host_key(&settings.host_key_path())?;
    let config = Arc::new(Config {
        keys: vec![host_key],
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    info!(addr = %listener.local_addr()?, data_dir = %settings.data_dir.display(), "nap gateway listening");
    // Only command tasks are tracked: shutdown waits for running pushes, not
    // for idle connections.
    let commands = TaskTracker::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => { warn!(error = %err, "accept failed"); continue; }
                };
                spawn_connection(Arc::clone(&ctx), Arc::clone(&config), commands.clone(), stream, peer);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    drop(listener);
    commands.close();
    info!(running = commands.len(), grace_secs = grace.as_secs(), "shutting down; letting running commands finish");
    if tokio::time::timeout(grace, commands.wait()).await.is_err() {
        warn!(running = commands.len(), "shutdown grace period over; stopping anyway");
    }
    Ok(())
}

fn spawn_connection(
    ctx: Arc<Context>,
    config: Arc<Config>,
    commands: TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let span = info_span!("connection", %peer);
    tokio::spawn(
        async move {
            let handler = handler::Connection::new(ctx, commands);
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => {
                    if let Err(err) = session.await {
                        info!(error = %err, "connection ended");
                    }
                }
                Err(err) => info!(error = %err, "handshake failed"),
            }
        }
        .instrument(span),
    );
}

/// The gateway's identity: generated on first start, then kept.
fn load_or_create_host_key(path: &std::path::Path) -> Result<PrivateKey> {
    if path.exists() {
        return russh::keys::load_secret_key(path, None)
            .with_context(|| format!("reading host key {}", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).context("generating the host key")?;
    let pem = key.to_openssh(russh::keys::ssh_key::LineEnding::LF).context("encoding the host key")?;
    let staged = path.with_extension("new");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staged)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&staged, path)?;
    info!(path = %path.display(), "generated the gateway's ed25519 host key");
    Ok(key)
}
