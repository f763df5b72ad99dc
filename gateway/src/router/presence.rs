//! What a router tells the release flow: under `/nap/routers/ID` (bound to
//! its lease, so a dead router stops counting), the upstreams it still sends
//! requests to: those in its route table, and those with requests in
//! flight. The release flow retires a release once no router lists it, so
//! a switch drains the old release instead of cutting its requests.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nap_state::{Store, StoreError, layout};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::health::Health;
use super::table::RouteTable;

/// How long a router's key outlives the router.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the lease is renewed.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// The value of `/nap/routers/ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// This router's host.
    pub host: String,
    /// `IP:PORT` of every upstream it routes to or has requests in flight to.
    pub upstreams: BTreeSet<String>,
}

/// Requests in flight, by upstream.
pub struct Inflight {
    counts: Mutex<HashMap<SocketAddr, usize>>,
    drained: Notify,
    /// What the router's own checks say of each instance.
    health: Arc<Health>,
}

impl Inflight {
    pub fn new(health: Arc<Health>) -> Inflight {
        Inflight { counts: Mutex::default(), drained: Notify::new(), health }
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<SocketAddr, usize>> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Picks an instance of `host`'s app from the table as it is now, and
    /// counts a request to it until the guard goes (with the response's
    /// body, once it is sent, or the tunnel's end).
    ///
    /// The pick and the count happen under the lock that [`Self::told`]
    /// takes to read the table: a request either picked from the table the
    /// router last told the store about, and is counted in what it tells,
    /// or it picks from the newer table. Nothing slips between a switch and
    /// the drain.
    ///
    /// It picks the instance with the fewest requests in flight that passes
    /// the router's checks, and not `avoid`.
    pub fn pick(
        self: &Arc<Self>,
        table: &RouteTable,
        host: &str,
        avoid: Option<SocketAddr>,
    ) -> Option<(SocketAddr, InflightGuard)> {
        let mut counts = self.counts();
        let load = |upstream| counts.get(&upstream).copied().unwrap_or(0);
        let upstream = table.routes().get(host)?.pick(load, |upstream| self.health.is_up(upstream), avoid)?;
        *counts.entry(upstream).or_default() += 1;
        Some((upstream, InflightGuard { inflight: Arc::clone(self), upstream }))
    }

    /// What this router sends to: the table's instances and those with
    /// requests in flight, read at one moment.
    fn told(&self, table: &RouteTable) -> BTreeSet<String> {
        let counts = self.counts();
        table.routes().upstreams().chain(counts.keys().copied()).map(|upstream| upstream.to_string()).collect()
    }
}

pub struct InflightGuard {
    inflight: Arc<Inflight>,
    upstream: SocketAddr,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut counts = self.inflight.counts();
        if let Some(count) = counts.get_mut(&self.upstream) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.upstream);
                drop(counts);
                self.inflight.drained.notify_one();
            }
        }
    }
}

/// Keeps this router's key current until `stop`, then removes it.
pub async fn announce(
    store: &Store,
    id: &str,
    host: &str,
    table: &RouteTable,
    inflight: &Inflight,
    stop: CancellationToken,
) {
    loop {
        match announce_once(store, id, host, table, inflight, &stop).await {
            Ok(()) => return,
            Err(err) => warn!(error = %err, "router: cannot tell the store what it routes; trying again"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn announce_once(
    store: &Store,
    id: &str,
    host: &str,
    table: &RouteTable,
    inflight: &Inflight,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let lease = store.grant_lease(LEASE_TTL).await?;
    let key = layout::router(id);
    let mut told = None;
    // Its own schedule: swaps and drained requests wake the loop far more
    // often than this, and must not put the renewal off until the lease lapses.
    let mut renew = tokio::time::interval(KEEP_ALIVE);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    loop {
        let upstreams = inflight.told(table);
        if told.as_ref() != Some(&upstreams) {
            let presence = Presence { host: host.to_owned(), upstreams: upstreams.clone() };
            let value = serde_json::to_vec(&presence).map_err(StoreError::Encode)?;
            store.write_many(&[(key.clone(), value)], &[], Some(lease)).await?;
            told = Some(upstreams);
        }
        tokio::select! {
            () = table.swapped() => {}
            () = inflight.drained.notified() => {}
            _ = renew.tick() => store.keep_lease_alive(lease).await?,
            () = stop.cancelled() => {
                let _ = store.revoke_lease(lease).await;
                return Ok(());
            }
        }
    }
}
