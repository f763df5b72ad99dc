//! nap's HTTP router: every app at one stable address, `APP.DOMAIN`, on
//! `http_listen` (and on `https_listen` where it has a certificate),
//! whichever release serves it. It runs in `nap serve` beside the SSH
//! gateway, or alone as `nap router` on hosts that only route.
//!
//! [`table`] keeps the routes and certificates (from the store, swapped
//! whole on every change); [`tls`] reads certificates and [`sni`] picks one
//! per handshake; [`route`] decides where each request goes, whichever
//! protocol brought it; [`h1`] (the router's own HTTP/1.1) and [`h2`]
//! (hyper's HTTP/2) forward it to one of the app's instances; [`presence`]
//! tells the release flow what this router still sends to.

pub mod access;
mod connections;
mod h1;
mod h2;
mod health;
mod metrics;
mod pool;
pub mod presence;
mod route;
mod sni;
mod table;
pub mod tls;
mod tunnel;
mod upstream;
mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::context::Context;
use crate::settings::{AddressList, Settings};
pub use h1::codec;
pub use table::RouteTable;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the router cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the router cannot start its threads: {0}")]
    Threads(#[source] std::io::Error),
}

/// A router that listens: bound now, so a taken port fails at start, and
/// with its threads ready.
pub struct Router {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    metrics: Option<TcpListener>,
    workers: workers::Workers,
    table: Arc<RouteTable>,
    /// `max_connections`, from the settings or the file limit.
    max_connections: usize,
}

/// What every connection is served with, whichever thread accepted it.
struct Serving {
    routing: Arc<route::Routing>,
    /// Connections to the instances for HTTP/1.1 clients, kept between requests.
    pool: Arc<pool::Pool>,
    /// HTTP/2 clients' requests, through hyper.
    forwarder: Arc<h2::Forwarder>,
    tls: TlsAcceptor,
    metrics: Arc<metrics::Metrics>,
    connections: Arc<connections::Connections>,
    stop: CancellationToken,
    /// The proxies whose word on their clients is kept (`trusted_proxies`).
    trusted_proxies: AddressList,
}

impl Router {
    /// Binds `http_listen` and `https_listen` and starts `router_threads`
    /// threads to serve them; `None` when the router is off. Called within
    /// the runtime that serves the metrics.
    pub fn bind(settings: &Settings) -> Result<Option<Router>, RouterError> {
        let Some(http) = settings.http_listen() else { return Ok(None) };
        let http = listen(&http)?;
        let https = settings.https_listen().map(|addr| listen(&addr)).transpose()?;
        let metrics = match settings.metrics_listen() {
            Some(addr) => {
                let listener = listen(&addr)?;
                Some(TcpListener::from_std(listener).map_err(|source| RouterError::Listen { addr, source })?)
            }
            None => None,
        };
        let workers =
            workers::Workers::new(settings.router_threads(), &http, https.as_ref()).map_err(RouterError::Threads)?;
        Ok(Some(Router {
            http: http.local_addr().ok(),
            https: https.as_ref().and_then(|l| l.local_addr().ok()),
            metrics,
            workers,
            table: RouteTable::new(&settings.domain()),
            max_connections: settings.max_connections(file_limit()),
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Routes until `stop`, following the store of `ctx`; then lets the
    /// requests in flight finish.
    pub async fn run(self, ctx: Arc<Context>, stop: CancellationToken) {
        let Router { http, https, metrics: metrics_listener, workers, table, max_connections } = self;
        ctx.access_log.start();
        let metrics = metrics::Metrics::new();
        let serving_metrics =
            metrics_listener.map(|listener| tokio::spawn(metrics::serve(listener, Arc::clone(&metrics), stop.clone())));
        let listeners = route::Listeners {
            http: http.map_or(0, |a| a.port()),
            https: https.map(|a| a.port()),
            upstream_timeout: ctx.settings.upstream_timeout(),
            body_timeout: ctx.settings.body_timeout(),
        };
        let threads = ctx.settings.router_threads();
        info!(?http, ?https, threads, max_connections, "nap router listening");
        let health = Arc::new(health::Health::default());
        let inflight = Arc::new(presence::Inflight::new(Arc::clone(&health)));
        let checking = tokio::spawn({
            let (table, stop) = (Arc::clone(&table), stop.clone());
            async move { health.follow(&table, stop).await }
        });
        let following = tokio::spawn({
            let (table, stop, ctx) = (Arc::clone(&table), stop.clone(), Arc::clone(&ctx));
            async move { table.follow(&ctx.store, stop).await }
        });
        let id = format!("{}-{}-{:04x}", ctx.settings.host_name(), std::process::id(), rand::random::<u16>());
        let (announce_stop, host) = (CancellationToken::new(), ctx.settings.host_name());
        let announcing = tokio::spawn({
            let (table, inflight, stop, ctx) =
                (Arc::clone(&table), Arc::clone(&inflight), announce_stop.clone(), Arc::clone(&ctx));
            async move { presence::announce(&ctx.store, &id, &host, &table, &inflight, stop).await }
        });
        let tls = TlsAcceptor::from(sni::server_config(Arc::clone(&table)));
        let observers = route::Observers { access: Arc::clone(&ctx.access_log), metrics: Arc::clone(&metrics) };
        let routing = Arc::new(route::Routing::new(table, inflight, ctx.store.clone(), listeners, observers));
        let pool = Arc::new(pool::Pool::default());
        pool.keep_swept();
        let forwarder = Arc::new(h2::Forwarder::new(Arc::clone(&routing)));
        let connections = connections::Connections::new(max_connections);
        let trusted_proxies = ctx.settings.router.trusted_proxies.clone().unwrap_or_else(AddressList::none);
        let serving = Arc::new(Serving { routing, pool, forwarder, tls, metrics, connections, stop, trusted_proxies });
        workers.run(&serving).await;
        following.abort();
        checking.abort();
        if let Some(serving) = serving_metrics {
            serving.abort();
        }
        // Gone from the store: the release flow no longer waits for this router.
        announce_stop.cancel();
        let _ = announcing.await;
    }
}

/// Calls `tick` with `what` every `period` (the first after one period),
/// until `what` is gone or the runtime ends.
fn every<T: Send + Sync + 'static>(period: Duration, what: Weak<T>, tick: impl Fn(&T) + Send + 'static) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.tick().await;
        loop {
            every.tick().await;
            match what.upgrade() {
                Some(what) => tick(&what),
                None => return,
            }
        }
    });
}

/// A listening socket on `addr`, non-blocking, for any runtime to take.
fn listen(addr: &str) -> Result<std::net::TcpListener, RouterError> {
    let listener = std::net::TcpListener::bind(addr).and_then(|listener| {
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    listener.map_err(|source| RouterError::Listen { addr: addr.to_owned(), source })
}

/// The soft limit on this process's open files, which `max_connections`
/// is made from by default (`nap serve` and `nap router` raise it to the
/// hard limit first).
fn file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Serves one accepted connection to its end: HTTP/1.1, or TLS and then
/// HTTP/1.1 or HTTP/2 as the client's ALPN asks. Until its first request,
/// it waits on its client, and may be closed to make room.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    secure: bool,
    signal: connections::Registration,
    serving: &Serving,
) {
    let _ = stream.set_nodelay(true);
    let (routing, pool) = (&*serving.routing, &*serving.pool);
    let trusted = serving.trusted_proxies.contains(peer.ip());
    if !secure {
        h1::serve(stream, routing, pool, &route::Peer::new(peer, false, trusted), signal).await;
        return;
    }
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, serving.tls.accept(stream));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        () = signal.closing(true) => return,
    };
    match handshake {
        Ok(Ok(stream)) => {
            let session = stream.get_ref().1;
            let client = route::Peer::new(peer, true, trusted).with_server_name(session.server_name());
            if session.alpn_protocol() == Some(b"h2") {
                h2::serve(TokioIo::new(stream), Arc::clone(&serving.forwarder), client, signal).await;
            } else {
                h1::serve(stream, routing, pool, &client, signal).await;
            }
        }
        Ok(Err(err)) => debug!(%peer, error = %err, "router: TLS handshake failed"),
        Err(_) => debug!(%peer, "router: TLS handshake timed out"),
    }
}
