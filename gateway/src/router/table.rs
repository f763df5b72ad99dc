//! The route table: which app answers for a host, and where its instances
//! are. Built from the store (the instances nap publishes under
//! `/nap/apps/APP/instances/`), kept current by a watch from the revision it
//! read, and swapped whole: a request sees the table before an update or
//! after it, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use nap_runner::HealthCheck;
use nap_state::Certificate;
use nap_state::{DomainGrant, Store, StoreError, WatchEvent, instance_addresses, layout};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::tls;
use crate::hosts::{self, wildcard_of};

/// How long the router waits before it reads the store again after the
/// store failed it.
const RETRY: Duration = Duration::from_secs(1);

/// One app's route: where its serving instances answer.
#[derive(Debug)]
pub struct Route {
    pub app: Arc<str>,
    pub upstreams: Vec<SocketAddr>,
    /// Plain HTTP gets 308 to HTTPS where the host has a certificate
    /// (`https APP force`).
    pub force_https: bool,
    /// The check the router keeps making of its instances (app.json's);
    /// `None`: any HTTP answer.
    pub check: Option<Arc<HealthCheck>>,
    next: AtomicUsize,
}

impl Route {
    /// The instance with the fewest requests outstanding (`load`), among
    /// those that pass their checks (`up`) and are not `avoid` (one that
    /// just refused a request); ties are taken in turn. Fails open: when
    /// every instance fails its check, one of them still gets the request.
    /// `None` when none serves.
    pub fn pick(
        &self,
        load: impl Fn(SocketAddr) -> usize,
        up: impl Fn(SocketAddr) -> bool,
        avoid: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let count = self.upstreams.len();
        match count {
            0 => return None,
            // Alone, it gets the request whatever its load and checks say.
            1 => return Some(self.upstreams[0]),
            _ => {}
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..count).map(|i| self.upstreams[(start + i) % count]);
        let others = || in_turn.clone().filter(|upstream| Some(*upstream) != avoid);
        others()
            .filter(|upstream| up(*upstream))
            .min_by_key(|upstream| load(*upstream))
            .or_else(|| others().min_by_key(|upstream| load(*upstream)))
            .or_else(|| in_turn.clone().next())
    }
}

/// Routes by host name, and certificates by server name, as one
/// immutable value.
#[derive(Debug, Default)]
pub struct Routes {
    by_host: HashMap<String, Arc<Route>>,
    /// Certificates by host, with the app each is of.
    certs: HashMap<String, (Arc<str>, Arc<CertifiedKey>)>,
    domain: String,
}

impl Routes {
    /// The routes that the store's `keys` describe: app `APP` answers at
    /// `APP.DOMAIN` and at the hosts added to it (`domains add`).
    fn from_keys(keys: &BTreeMap<String, Vec<u8>>, domain: &str) -> Routes {
        let mut hosts: BTreeMap<&str, Vec<(String, DomainGrant)>> = BTreeMap::new();
        for (key, value) in keys {
            if let Some((app, host)) = layout::parse_app_domain(key) {
                hosts.entry(app).or_default().push((host.to_owned(), DomainGrant::of(value)));
            }
        }
        // Every app has a route, served or not: one with no instance answers 503.
        let apps = keys.keys().filter_map(|key| layout::parse_app_record(key));
        let mut upstreams: BTreeMap<&str, Vec<SocketAddr>> =
            hosts.keys().copied().chain(apps).map(|app| (app, Vec::new())).collect();
        let instances = instance_addresses(keys.iter().map(|(key, value)| (key.as_str(), value.as_slice())));
        for ((app, _), address) in instances {
            upstreams.entry(app).or_default().extend(address.and_then(|address| address.parse::<SocketAddr>().ok()));
        }
        let forced: Vec<&str> = keys
            .iter()
            .filter(|(_, value)| value.as_slice() == b"force")
            .filter_map(|(key, _)| layout::parse_app_https(key))
            .collect();
        let checks: HashMap<&str, Arc<HealthCheck>> = keys
            .iter()
            .filter_map(|(key, value)| Some((layout::parse_app_healthcheck(key)?, value)))
            .filter_map(|(app, value)| {
                Some((app, Arc::new(serde_json::from_slice::<Option<HealthCheck>>(value).ok()??)))
            })
            .collect();
        // Each app at its own host first: nap keeps `APP.DOMAIN` for `APP`.
        let mut by_host = HashMap::new();
        let mut listed: BTreeMap<String, Vec<Arc<Route>>> = BTreeMap::new();
        for (app, upstreams) in upstreams {
            let force_https = forced.contains(&app);
            let check = checks.get(app).cloned();
            let route = Arc::new(Route { app: app.into(), upstreams, force_https, check, next: AtomicUsize::new(0) });
            for (host, grant) in hosts.remove(app).unwrap_or_default() {
                // An admin's name only where an admin gave it.
                match hosts::check_reserved(&host, domain, app, grant == DomainGrant::Admin) {
                    Ok(()) => listed.entry(host).or_default().push(Arc::clone(&route)),
                    Err(why) => debug!(%app, %host, %why, "route table: a host this app may not have is left out"),
                }
            }
            by_host.insert(format!("{app}.{domain}"), route);
        }
        // Then the hosts apps claimed: each to its one app. Claims make two
        // impossible; should the store still list two, the host goes to
        // neither, whatever their names.
        for (host, mut routes) in listed {
            if routes.len() == 1 && !by_host.contains_key(&host) {
                by_host.insert(host, routes.remove(0));
            } else {
                warn!(%host, apps = routes.len(), "route table: a host more than one app lists is left out");
            }
        }
        // A certificate serves only a host that routes to its own app.
        let mut certs = HashMap::new();
        for (key, value) in keys {
            let Some((app, host)) = layout::parse_app_cert(key) else { continue };
            if by_host.get(host).is_none_or(|route| *route.app != *app) {
                continue;
            }
            let read = serde_json::from_slice::<Certificate>(value)
                .map_err(|err| err.to_string())
                .and_then(|cert| tls::certified_key(&cert).map_err(|err| err.to_string()));
            match read {
                Ok(certified) => {
                    certs.insert(host.to_owned(), (Arc::from(app), certified));
                }
                Err(err) => warn!(%app, %host, error = %err, "route table: a stored certificate is not usable"),
            }
        }
        Routes { by_host, certs, domain: domain.to_owned() }
    }

    /// The certificate for server name `host`: its own, else its
    /// wildcard's where `host` routes to the wildcard's app.
    pub fn cert(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some((_, cert)) = self.certs.get(host) {
            return Some(cert);
        }
        let (app, cert) = self.certs.get(&wildcard_of(host)?)?;
        self.get(host).is_some_and(|route| route.app == *app).then_some(cert)
    }

    /// The route of `host`: its own, else its wildcard's.
    pub fn get(&self, host: &str) -> Option<&Arc<Route>> {
        self.by_host.get(host).or_else(|| self.by_host.get(&wildcard_of(host)?))
    }

    /// Every instance the table routes to.
    pub fn upstreams(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_host.values().flat_map(|route| route.upstreams.iter().copied())
    }

    /// Every instance once, with the host it is checked as (`APP.DOMAIN`)
    /// and its app's check.
    pub fn checked(&self) -> impl Iterator<Item = (SocketAddr, String, Option<&Arc<HealthCheck>>)> + '_ {
        let mut seen = std::collections::HashSet::new();
        self.by_host.values().flat_map(move |route| {
            let host = format!("{}.{}", route.app, self.domain);
            let fresh: Vec<SocketAddr> = route.upstreams.iter().copied().filter(|u| seen.insert(*u)).collect();
            fresh.into_iter().map(move |upstream| (upstream, host.clone(), route.check.as_ref()))
        })
    }
}

/// The table the router reads, swapped whole on every change.
pub struct RouteTable {
    current: ArcSwap<Routes>,
    domain: String,
    swapped: tokio::sync::Notify,
}

impl RouteTable {
    pub fn new(domain: &str) -> Arc<RouteTable> {
        Arc::new(RouteTable {
            current: ArcSwap::from_pointee(Routes::default()),
            domain: domain.to_owned(),
            swapped: tokio::sync::Notify::new(),
        })
    }

    /// The routes now.
    pub fn routes(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// Keeps the table current from `store` until `stop`: reads every app's
    /// keys at one revision, then applies the watch from the next one. When
    /// the store fails (etcd restarted, history compacted), it reads again.
    pub async fn follow(&self, store: &Store, stop: CancellationToken) {
        let failed = "route table: the store failed; reading it again";
        crate::following::until_stopped(&stop, RETRY, failed, || self.follow_once(store)).await;
    }

    async fn follow_once(&self, store: &Store) -> Result<(), StoreError> {
        let (pairs, revision) = store.snapshot(&[layout::apps()]).await?;
        let mut keys: BTreeMap<String, Vec<u8>> = pairs.into_iter().collect();
        self.swap(&keys);
        let mut events = store.watch(&layout::apps(), revision + 1).await?;
        while let Some(batch) = events.next().await {
            let mut changed = false;
            for event in batch? {
                let key = match event {
                    WatchEvent::Put { key, value, .. } => {
                        keys.insert(key.clone(), value);
                        key
                    }
                    WatchEvent::Delete { key, .. } => {
                        keys.remove(&key);
                        key
                    }
                };
                changed |= layout::parse_instance_field(&key).is_some()
                    || layout::parse_app_record(&key).is_some()
                    || layout::parse_app_domain(&key).is_some()
                    || layout::parse_app_cert(&key).is_some()
                    || layout::parse_app_https(&key).is_some()
                    || layout::parse_app_healthcheck(&key).is_some();
            }
            if changed {
                self.swap(&keys);
            }
        }
        Ok(())
    }

    fn swap(&self, keys: &BTreeMap<String, Vec<u8>>) {
        let routes = Routes::from_keys(keys, &self.domain);
        info!(hosts = routes.by_host.len(), "route table swapped");
        self.current.store(Arc::new(routes));
        self.swapped.notify_one();
    }

    /// Resolves after the next swap (or at once, if one came unawaited).
    pub async fn swapped(&self) {
        self.swapped.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_become_routes_by_host_taken_in_turn() {
        let mut keys = BTreeMap::new();
        for (id, port) in [("nap-shop-v3", "4001"), ("nap-shop-v4", "4002")] {
            keys.insert(layout::instance_field("shop", id, "ip"), b"10.0.0.7".to_vec());
            keys.insert(layout::instance_field("shop", id, "port"), port.as_bytes().to_vec());
            keys.insert(layout::instance_field("shop", id, "release"), b"3".to_vec());
        }
        keys.insert(layout::instance_field("half", "x", "ip"), b"10.0.0.8".to_vec());
        keys.insert(layout::config("shop"), b"{}".to_vec());
        keys.insert(layout::app_record("fresh"), b"{}".to_vec());
        let routes = Routes::from_keys(&keys, "apps.example.com");
        let shop = routes.get("shop.apps.example.com").expect("shop's route");
        let idle = |_| 0;
        let up = |_| true;
        let picked: Vec<_> = (0..3).filter_map(|_| shop.pick(idle, up, None)).map(|a| a.port()).collect();
        assert_eq!(picked, [4001, 4002, 4001], "idle instances in turn");
        let busy_first = |a: SocketAddr| usize::from(a.port() == 4001);
        let picked: Vec<_> = (0..3).filter_map(|_| shop.pick(busy_first, up, None)).map(|a| a.port()).collect();
        assert_eq!(picked, [4002, 4002, 4002], "the fewest requests outstanding");
        let first_down = |a: SocketAddr| a.port() != 4001;
        assert_eq!(shop.pick(idle, first_down, None).map(|a| a.port()), Some(4002), "a failing instance is left out");
        assert!(shop.pick(idle, |_| false, None).is_some(), "all failing: fail open");
        let avoided =
            (0..4).filter_map(|_| shop.pick(idle, up, "10.0.0.7:4002".parse().ok())).all(|a| a.port() == 4001);
        assert!(avoided, "a retry goes to another instance");
        let half = routes.get("half.apps.example.com").expect("an app whose instance has no port yet");
        assert_eq!(half.upstreams.len(), 0);
        let fresh = routes.get("fresh.apps.example.com").expect("an app with no instance at all: 503, not 404");
        assert_eq!(fresh.upstreams.len(), 0);
        let mut keys = keys.clone();
        keys.insert(layout::app_domain("shop", "www.shop.test"), Vec::new());
        keys.insert(layout::app_domain("shop", "*.shop.test"), Vec::new());
        keys.insert(layout::app_domain("idle", "idle.test"), Vec::new());
        let routes = Routes::from_keys(&keys, "apps.example.com");
        for host in ["www.shop.test", "eu.shop.test", "shop.apps.example.com"] {
            assert_eq!(routes.get(host).map(|r| &*r.app), Some("shop"), "{host}");
        }
        assert!(routes.get("a.b.shop.test").is_none(), "a wildcard covers one label");
        assert_eq!(routes.get("idle.test").map(|r| r.upstreams.len()), Some(0), "a host with no instance: 503");
        let half = routes.get("half.apps.example.com").expect("still there");
        assert_eq!(half.pick(|_| 0, |_| true, None), None, "no instance to route to: the router answers 503");
        assert!(routes.get("shop.localhost").is_none());
    }

    #[test]
    fn a_host_goes_to_the_app_it_belongs_to_whatever_the_names() {
        let mut keys = BTreeMap::new();
        for app in ["sec-b", "sec-z", "aaa", "zzz"] {
            keys.insert(layout::app_record(app), b"{}".to_vec());
        }
        // Claimed before nap kept names for their apps: sec-z on sec-b's own
        // host and on a name kept for an app not made yet.
        keys.insert(layout::app_domain("sec-z", "sec-b.localhost"), Vec::new());
        keys.insert(layout::app_domain("sec-z", "later.localhost"), Vec::new());
        keys.insert(layout::app_domain("aaa", "www.sec-b.localhost"), Vec::new());
        keys.insert(layout::app_domain("sec-b", "pr-1--sec-b.localhost"), Vec::new());
        // Two apps that list one host (claims forbid it): neither gets it.
        keys.insert(layout::app_domain("aaa", "both.test"), Vec::new());
        keys.insert(layout::app_domain("zzz", "both.test"), Vec::new());
        let routes = Routes::from_keys(&keys, "localhost");
        let app_at = |host: &str| routes.get(host).map(|route| route.app.to_string());
        assert_eq!(app_at("sec-b.localhost").as_deref(), Some("sec-b"));
        assert_eq!(app_at("pr-1--sec-b.localhost").as_deref(), Some("sec-b"));
        assert_eq!(app_at("later.localhost"), None, "kept for the app 'later'");
        assert_eq!(app_at("www.sec-b.localhost"), None, "below sec-b's own host: sec-b's");
        assert_eq!(app_at("both.test"), None);
    }
}
