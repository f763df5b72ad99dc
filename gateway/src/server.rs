//! `nap serve`: the SSH gateway.
//!
//! As in warpgate, the russh [`handler::Connection`] only authenticates and
//! forwards: each exec request becomes a task ([`channel::serve_exec`]) that
//! owns its channel and is the only writer to it.

mod channel;
mod handler;
mod startups;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey};
use russh::server::Config;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::context::Context;
use crate::router::Router;
use startups::{Limits, Startup, Startups, Unfinished};

/// What keeps the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host key {}: {source}", path.display())]
    HostKey {
        path: std::path::PathBuf,
        #[source]
        source: russh::keys::Error,
    },
    #[error("writing host key {}: {source}", path.display())]
    WriteHostKey {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
}

pub async fn serve(ctx: Arc<Context>) -> Result<(), ServeError> {
    let settings = &ctx.settings;
    let listen = settings.listen();
    let shutdown_grace = settings.shutdown_timeout();
    let host_key = load_or_create_host_key(&settings.host_key_path())?;
    // The HTTP router, in this process and runtime, unless `http_listen = "off"`.
    let router = Router::bind(settings)?;
    let stop_routing = CancellationToken::new();
    let routing = router.map(|router| tokio::spawn(router.run(Arc::clone(&ctx), stop_routing.clone())));
    // Instances that die on this host leave the routes at once; on a swarm
    // the routes follow the task list (not on Kubernetes: its Service does).
    let following = match nap_runner::RunnerKind::watcher(settings.runner) {
        nap_runner::Watcher::None => None,
        nap_runner::Watcher::SwarmTasks => {
            Some(tokio::spawn(crate::swarm_tasks::follow(Arc::clone(&ctx), stop_routing.clone())))
        }
        nap_runner::Watcher::DockerEvents => {
            Some(tokio::spawn(crate::liveness::follow(Arc::clone(&ctx), stop_routing.clone())))
        }
    };
    // The keys allowed in, followed in the store, so a login reads nothing.
    let following_keys = tokio::spawn({
        let (ctx, stop) = (Arc::clone(&ctx), stop_routing.clone());
        async move { ctx.known_keys.follow(&ctx.store, &stop).await }
    });
    // Old values leave the store's history.
    let compacting = tokio::spawn({
        let (ctx, stop) = (Arc::clone(&ctx), stop_routing.clone());
        async move { crate::history::compact(&ctx.store, ctx.settings.history_retention(), &stop).await }
    });
    // Certificates of apps with `letsencrypt on` are renewed from here.
    let renewing = routing.is_some().then(|| {
        let (ctx, stop) = (Arc::clone(&ctx), stop_routing.clone());
        tokio::spawn(async move { crate::acme::renew(&ctx, stop).await })
    });
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
    let listener =
        TcpListener::bind(&listen).await.map_err(|source| ServeError::Listen { addr: listen.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: listen.clone(), source })?;
    // Unset, the runner is chosen per command: systemd when it is on the bus, else docker.
    let runner = settings.runner.map_or("systemd if on the bus, else docker", nap_runner::RunnerKind::name);
    info!(%addr, data_dir = %settings.data_dir().display(), %runner, "nap gateway listening");
    // Only command tasks are tracked: shutdown waits for running pushes, not
    // for idle connections.
    let commands = TaskTracker::new();
    let startups = Startups::new(Limits::of(settings));
    let grace = settings.login_grace_time();
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        crate::following::accept_failed("gateway", &err).await;
                        continue;
                    }
                };
                // Refused at once, before any SSH: closed as the stream drops.
                let startup = match startups.admit(peer.ip()) {
                    Ok(startup) => startup,
                    Err(refused) => {
                        debug!(%peer, %refused, "connection refused");
                        continue;
                    }
                };
                let login = Login { startup, startups: Arc::clone(&startups), grace };
                spawn_connection(Arc::clone(&ctx), Arc::clone(&config), commands.clone(), stream, peer, login);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    drop(listener);
    // New requests stop; those in flight finish.
    stop_routing.cancel();
    if let Some(renewing) = renewing {
        renewing.abort();
    }
    if let Some(following) = following {
        following.abort();
    }
    following_keys.abort();
    compacting.abort();
    if let Some(routing) = routing {
        let _ = tokio::time::timeout(shutdown_grace, routing).await;
    }
    commands.close();
    info!(
        running = commands.len(),
        grace_secs = shutdown_grace.as_secs(),
        "shutting down; letting running commands finish"
    );
    if tokio::time::timeout(shutdown_grace, commands.wait()).await.is_err() {
        warn!(running = commands.len(), "shutdown grace period over; stopping anyway");
    }
    Ok(())
}

/// What a connection must do before it may stay: log in within `grace`,
/// and not be cut to make room meanwhile; if it ends without, its address
/// pays (`startups`).
struct Login {
    startup: Startup,
    startups: Arc<Startups>,
    grace: Duration,
}

fn spawn_connection(
    ctx: Arc<Context>,
    config: Arc<Config>,
    commands: TaskTracker,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    login: Login,
) {
    let span = info_span!("connection", %peer);
    tokio::spawn(
        async move {
            let (evicted, logged_in) = (login.startup.evicted.clone(), CancellationToken::new());
            let handler = handler::Connection::new(ctx, commands, login.startup, logged_in.clone());
            let cut = async {
                tokio::select! {
                    () = logged_in.cancelled() => std::future::pending().await,
                    () = tokio::time::sleep(login.grace) => Some(Unfinished::GraceExceeded),
                    () = evicted.cancelled() => None,
                }
            };
            // The session runs as a task of its own once the client's banner
            // is in; shutting the socket down (through a second handle on
            // it) ends it, whatever it waits for.
            let socket = stream.as_fd().try_clone_to_owned().map(std::net::TcpStream::from);
            let unfinished = tokio::select! {
                () = serve_session(config, stream, handler) => {
                    (!logged_in.is_cancelled() && !evicted.is_cancelled()).then_some(Unfinished::NoAuth)
                }
                why = cut => {
                    // An evicted one was counted against its address then.
                    if why.is_some() {
                        info!("connection closed: did not log in within the login grace time");
                    } else {
                        info!("connection closed: cut to make room for newer connections that are not logged in");
                    }
                    if let Ok(socket) = socket {
                        let _ = socket.shutdown(std::net::Shutdown::Both);
                    }
                    why
                }
            };
            if let Some(how) = unfinished {
                login.startups.unfinished(peer.ip(), how);
            }
        }
        .instrument(span),
    );
}

async fn serve_session(config: Arc<Config>, stream: tokio::net::TcpStream, handler: handler::Connection) {
    match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(err) = session.await {
                info!(error = %err, "connection ended");
            }
        }
        Err(err) => info!(error = %err, "handshake failed"),
    }
}

/// The gateway's identity: generated on first start, then kept.
fn load_or_create_host_key(path: &std::path::Path) -> Result<PrivateKey, ServeError> {
    let key_err = |source| ServeError::HostKey { path: path.to_owned(), source };
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(key_err);
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| key_err(e.into()))?;
    let pem = key.to_openssh(russh::keys::ssh_key::LineEnding::LF).map_err(|e| key_err(e.into()))?;
    let write = || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let staged = path.with_extension("new");
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staged)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staged, path)
    };
    write().map_err(|source| ServeError::WriteHostKey { path: path.to_owned(), source })?;
    info!(path = %path.display(), "generated the gateway's ed25519 host key");
    Ok(key)
}
