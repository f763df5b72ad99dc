//! nap's HTTP router: every app at one stable address, `APP.DOMAIN`, on
//! `http_listen`, whichever release serves it. It runs in `nap serve` beside
//! the SSH gateway, or alone as `nap router` on hosts that only route.
//!
//! [`table`] keeps the routes (from the instances the release flow
//! publishes in the store, swapped whole on every change); [`proxy`]
//! forwards each request to one of the app's instances.

pub mod presence;
mod proxy;
mod table;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::context::Context;
pub use proxy::Proxy;
pub use table::RouteTable;

/// How long a client gets to send a request's headers (against slow-loris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the router reads of a connection before a request's head is
/// whole (hyper's read buffer); the proxy refuses large headers itself.
const MAX_HEAD: usize = 64 * 1024;
/// How long the router waits after an accept error (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("the router cannot listen on {addr}: {source}")]
pub struct RouterError {
    addr: String,
    #[source]
    source: std::io::Error,
}

/// A router that listens: bound now, so a taken port fails at start.
pub struct Router {
    listener: TcpListener,
    table: Arc<RouteTable>,
}

impl Router {
    pub async fn bind(addr: &str, domain: &str) -> Result<Router, RouterError> {
        let err = |source| RouterError { addr: addr.to_owned(), source };
        let listener = TcpListener::bind(addr).await.map_err(err)?;
        Ok(Router { listener, table: RouteTable::new(domain) })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Routes until `stop`, following the store of `ctx`; then lets the
    /// requests in flight finish.
    pub async fn run(self, ctx: Arc<Context>, stop: CancellationToken) {
        let Router { listener, table } = self;
        let port = listener.local_addr().map_or(0, |a| a.port());
        info!(addr = ?listener.local_addr().ok(), "nap router listening");
        let inflight = Arc::new(presence::Inflight::default());
        let following = tokio::spawn({
            let (table, stop, ctx) = (Arc::clone(&table), stop.clone(), Arc::clone(&ctx));
            async move { table.follow(&ctx.store, stop).await }
        });
        let id = format!("{}-{}-{:04x}", ctx.settings.host_name(), std::process::id(), rand::random::<u16>());
        let (announce_stop, host) = (CancellationToken::new(), ctx.settings.host_name());
        let announcing = tokio::spawn({
            let (table, inflight, stop) = (Arc::clone(&table), Arc::clone(&inflight), announce_stop.clone());
            async move { presence::announce(&ctx.store, &id, &host, &table, &inflight, stop).await }
        });
        let proxy = Arc::new(Proxy::new(table, inflight));
        let connections = TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        warn!(error = %err, "router: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            let proxy = Arc::clone(&proxy);
            let stop = stop.clone();
            connections.spawn(async move {
                let _ = stream.set_nodelay(true);
                let service = service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer, port).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let served = tokio::select! {
                    served = connection.as_mut() => served,
                    () = stop.cancelled() => {
                        // Finish the request in flight, then close.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(err) = served {
                    debug!(%peer, error = %err, "router connection ended");
                }
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        following.abort();
        // Gone from the store: the release flow no longer waits for this router.
        announce_stop.cancel();
        let _ = announcing.await;
    }
}
