//! The router's own health checks: every instance in the route table is
//! checked twice a second, with its app's check (app.json's, published
//! with the release) or, without one, for a TCP connection on its port
//! (no request, so the app's log stays its own). One that fails a
//! check leaves the rotation at once and comes back when it passes again;
//! the release flow is not told, as this is the router's view alone.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use nap_runner::CheckFailed;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::table::RouteTable;

/// How often each instance is checked.
const INTERVAL: Duration = Duration::from_millis(500);
/// How long one check may take, at most: a failing instance leaves within
/// `INTERVAL + TIMEOUT`.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The instances that failed their last check.
#[derive(Default)]
pub struct Health {
    down: ArcSwap<HashSet<SocketAddr>>,
}

impl Health {
    /// Whether `upstream` passed its last check (or was never checked).
    pub fn is_up(&self, upstream: SocketAddr) -> bool {
        let down = self.down.load();
        down.is_empty() || !down.contains(&upstream)
    }

    /// Checks the table's instances until `stop`.
    pub async fn follow(&self, table: &RouteTable, stop: CancellationToken) {
        loop {
            let routes = table.routes();
            let checks = routes.checked().map(|(upstream, host, check)| async move {
                let checked = async {
                    match check {
                        Some(check) => check.probe(upstream, &host).await,
                        None => tokio::net::TcpStream::connect(upstream)
                            .await
                            .map(drop)
                            .map_err(|source| CheckFailed::Connect { port: upstream.port(), source }),
                    }
                };
                (upstream, tokio::time::timeout(TIMEOUT, checked).await)
            });
            let results = tokio::select! {
                results = futures_util::future::join_all(checks) => results,
                () = stop.cancelled() => return,
            };
            let mut down = HashSet::new();
            for (upstream, result) in results {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(failed)) => {
                        if self.is_up(upstream) {
                            info!(%upstream, reason = %failed, "router: an instance failed its check; out of rotation");
                        }
                        down.insert(upstream);
                    }
                    Err(_) => {
                        if self.is_up(upstream) {
                            info!(%upstream, "router: an instance did not answer its check in time; out of rotation");
                        }
                        down.insert(upstream);
                    }
                }
            }
            for back in self.down.load().difference(&down) {
                info!(upstream = %back, "router: an instance passes its check again; back in rotation");
            }
            self.down.store(Arc::new(down));
            tokio::select! {
                () = tokio::time::sleep(INTERVAL) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
