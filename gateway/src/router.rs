//! nap's HTTP router: every app at one stable address, `APP.DOMAIN`, on
//! `http_listen` (and on `https_listen` where it has a certificate),
//! whichever release serves it. It runs in `nap serve` beside the SSH
//! gateway, or alone as `nap router` on hosts that only route.
//!
//! [`table`] keeps the routes and certificates (from the store, swapped
//! whole on every change); [`tls`] reads certificates and picks one per
//! handshake; [`proxy`] forwards each request to one of the app's
//! instances; [`presence`] tells the release flow what this router still
//! sends to.

pub mod access;
mod h1;
mod health;
mod metrics;
pub mod presence;
mod proxy;
mod shutdown;
mod table;
pub mod tls;
mod upstream;
mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::context::Context;
use crate::settings::{Settings, TrustedProxies};
pub use proxy::{Listeners, Peer, Proxy};
pub use table::RouteTable;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most an HTTP/2 request's headers may take.
const MAX_HEAD: usize = 64 * 1024;

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
}

/// What every connection is served with, whichever thread accepted it.
struct Serving {
    proxy: Arc<Proxy>,
    tls: TlsAcceptor,
    metrics: Arc<metrics::Metrics>,
    shutdown: Arc<shutdown::Shutdown>,
    stop: CancellationToken,
    /// The proxies whose word on their clients is kept (`trusted_proxies`).
    trusted_proxies: TrustedProxies,
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
        }))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Routes until `stop`, following the store of `ctx`; then lets the
    /// requests in flight finish.
    pub async fn run(self, ctx: Arc<Context>, stop: CancellationToken) {
        let Router { http, https, metrics: metrics_listener, workers, table } = self;
        ctx.access_log.start();
        let metrics = metrics::Metrics::new();
        let serving_metrics =
            metrics_listener.map(|listener| tokio::spawn(metrics::serve(listener, Arc::clone(&metrics), stop.clone())));
        let listeners = Listeners {
            http: http.map_or(0, |a| a.port()),
            https: https.map(|a| a.port()),
            upstream_timeout: ctx.settings.upstream_timeout(),
        };
        info!(?http, ?https, threads = ctx.settings.router_threads(), "nap router listening");
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
        let tls = TlsAcceptor::from(tls::server_config(Arc::clone(&table)));
        let observers = proxy::Observers { access: Arc::clone(&ctx.access_log), metrics: Arc::clone(&metrics) };
        let proxy = Arc::new(Proxy::new(table, inflight, ctx.store.clone(), listeners, observers));
        let shutdown = Arc::new(shutdown::Shutdown::default());
        let trusted_proxies = ctx.settings.trusted_proxies.clone().unwrap_or_default();
        let serving = Arc::new(Serving { proxy, tls, metrics, shutdown, stop, trusted_proxies });
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

/// Serves one accepted connection to its end: HTTP/1.1, or TLS and then
/// HTTP/1.1 or HTTP/2 as the client's ALPN asks.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    secure: bool,
    signal: shutdown::Registration,
    serving: &Serving,
) {
    let _ = stream.set_nodelay(true);
    let proxy = &serving.proxy;
    let trusted = serving.trusted_proxies.contains(peer.ip());
    if !secure {
        h1::serve(stream, proxy, &Peer::new(peer, false, trusted), signal).await;
        return;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, serving.tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            let session = stream.get_ref().1;
            let client = Peer::new(peer, true, trusted).with_server_name(session.server_name());
            if session.alpn_protocol() == Some(b"h2") {
                serve_h2(TokioIo::new(stream), Arc::clone(proxy), client, serving.stop.clone()).await;
            } else {
                h1::serve(stream, proxy, &client, signal).await;
            }
        }
        Ok(Err(err)) => debug!(%peer, error = %err, "router: TLS handshake failed"),
        Err(_) => debug!(%peer, "router: TLS handshake timed out"),
    }
}

/// Serves one HTTP/2 client connection (over TLS, by ALPN) through
/// hyper, until it ends; on `stop`, the requests in flight finish first.
/// HTTP/1.1 clients are served by [`h1`].
async fn serve_h2<IO>(io: TokioIo<IO>, proxy: Arc<Proxy>, peer: Peer, stop: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let addr = peer.addr;
    let service = service_fn(move |req| {
        let (proxy, peer) = (Arc::clone(&proxy), Arc::clone(&peer));
        async move { Ok::<_, Infallible>(proxy.handle(req, &peer).await) }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX));
    let served =
        until_stopped(builder.serve_connection(io, service), http2::Connection::graceful_shutdown, &stop).await;
    if let Err(err) = served {
        debug!(peer = %addr, error = %err, "router connection ended");
    }
}

/// Serves `connection` to its end; on `stop`, asks it to `finish` (what
/// it is doing, and end) first.
async fn until_stopped<C>(
    connection: C,
    finish: impl FnOnce(Pin<&mut C>),
    stop: &CancellationToken,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            finish(connection.as_mut());
            connection.await
        }
    }
}
