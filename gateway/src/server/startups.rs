//! SSH connections that have not logged in yet, and what a client address
//! may do before it logs in, in the spirit of OpenSSH's `MaxStartups`,
//! `PerSourceMaxStartups` and `PerSourcePenalties`:
//!
//! - at most `per_source_max_startups` connections per address wait to log
//!   in: one more cuts that address's oldest;
//! - at most `max_startups` in all: one more cuts the oldest connection of
//!   the address that holds the most, so that a flood from one address
//!   never cuts the lone connection of a user from another;
//! - at most `per_source_connection_rate` new connections a second per
//!   address (bursts of five seconds' worth): more are closed at accept;
//! - a connection that ends without logging in costs its address a penalty
//!   (`per_source_penalties`): penalties add up and run out with time, and
//!   an address whose penalty passes its `min` is closed at accept, before
//!   any SSH work, until it runs out.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host's usual share).
//! Addresses on `per_source_penalty_exempt_list` (loopback, by default:
//! behind a local proxy every client has it) are never refused at accept.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::settings::{AddressList, Penalties, Settings};

/// The most addresses whose rate and penalty are remembered; past it, a
/// new address is let in as if it had no past.
const MAX_SOURCES: usize = 65_536;
/// How many seconds of `per_source_connection_rate` a burst may take.
const BURST_SECONDS: f64 = 5.0;

/// What the limits are (from the settings).
pub struct Limits {
    pub total: usize,
    pub per_source: usize,
    pub rate: u32,
    pub penalties: Penalties,
    pub exempt: AddressList,
}

impl Limits {
    /// How many new connections an address may open at once.
    fn burst(&self) -> f64 {
        f64::from(self.rate) * BURST_SECONDS
    }

    pub fn of(settings: &Settings) -> Limits {
        let (total, per_source) = settings.max_startups();
        Limits {
            total: total.max(1),
            per_source: per_source.max(1),
            rate: settings.per_source_connection_rate().max(1),
            penalties: settings.per_source_penalties(),
            exempt: settings.per_source_penalty_exempt_list(),
        }
    }
}

/// The connections waiting to log in, and the addresses' rates and penalties.
pub struct Startups {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Oldest first.
    waiting: BTreeMap<u64, Waiting>,
    sources: HashMap<IpAddr, Source>,
    /// When `sources` was last pruned.
    pruned: Option<Instant>,
}

struct Waiting {
    source: IpAddr,
    evicted: CancellationToken,
}

/// One address's past.
struct Source {
    /// New connections it may open now, as of `refilled`.
    tokens: f64,
    refilled: Instant,
    /// Refused for its rate since its last admitted connection.
    over_rate: bool,
    /// When its penalty runs out, and whether it is enforced (past `min`).
    penalty: Option<(Instant, bool)>,
}

/// Why a connection is closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("its address is penalised for {}s more: too many of its connections ended without logging in", .0.as_secs())]
    Penalised(Duration),
    #[error("its address opens more than per_source_connection_rate connections a second")]
    Rate,
}

/// How a connection ended without logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// Its client closed it (or it broke off the handshake).
    NoAuth,
    /// Cut at `login_grace_time`.
    GraceExceeded,
}

/// One connection's place until it logs in (or ends): dropping it frees it.
pub struct Startup {
    startups: Arc<Startups>,
    id: u64,
    /// Cancelled when the connection is cut to make room.
    pub evicted: CancellationToken,
}

/// The address the limits count `ip` under: itself, or its /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl Startups {
    pub fn new(limits: Limits) -> Arc<Startups> {
        Arc::new(Startups { limits, state: Mutex::default() })
    }

    /// Counts a new connection from `ip`, or refuses it at once (its
    /// address is penalised, or over its rate). Cuts the oldest waiting
    /// connection of its address, or of the address that holds the most,
    /// when it would pass a limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Startup, Refused> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Startup, Refused> {
        let source = source_of(ip);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.limits.exempt.contains(ip) {
            self.check(&mut state, source, now)?;
        }
        if state.waiting_of(source) >= self.limits.per_source {
            let oldest = state.waiting.iter().find(|(_, waiting)| waiting.source == source).map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.cut(&mut state, id, now);
            }
        }
        if state.waiting.len() >= self.limits.total
            && let Some(id) = state.oldest_of_the_most()
        {
            self.cut(&mut state, id, now);
        }
        let (id, evicted) = (state.next, CancellationToken::new());
        state.next += 1;
        state.waiting.insert(id, Waiting { source, evicted: evicted.clone() });
        Ok(Startup { startups: Arc::clone(self), id, evicted })
    }

    /// Refuses `source` if it is penalised or over its rate; else takes
    /// one of its new connections.
    fn check(&self, state: &mut State, source: IpAddr, now: Instant) -> Result<(), Refused> {
        let burst = self.limits.burst();
        let Some(entry) = state.source(source, &self.limits, now) else { return Ok(()) };
        if let Some(left) = entry.refused_for(now) {
            return Err(Refused::Penalised(left));
        }
        let rate = f64::from(self.limits.rate);
        entry.tokens = (entry.tokens + now.duration_since(entry.refilled).as_secs_f64() * rate).min(burst);
        entry.refilled = now;
        if entry.tokens < 1.0 {
            if !entry.over_rate {
                entry.over_rate = true;
                info!(%source, rate = self.limits.rate, "refusing SSH connections from an address over per_source_connection_rate");
            }
            return Err(Refused::Rate);
        }
        entry.tokens -= 1.0;
        entry.over_rate = false;
        Ok(())
    }

    /// Cuts the waiting connection `id`, and penalises its address.
    fn cut(&self, state: &mut State, id: u64, now: Instant) {
        if let Some(waiting) = state.waiting.remove(&id) {
            waiting.evicted.cancel();
            self.penalise(state, waiting.source, self.limits.penalties.evicted, now);
        }
    }

    /// A connection from `ip` ended without logging in: its address pays.
    pub fn unfinished(&self, ip: IpAddr, how: Unfinished) {
        self.unfinished_at(ip, how, Instant::now());
    }

    fn unfinished_at(&self, ip: IpAddr, how: Unfinished, now: Instant) {
        let penalties = &self.limits.penalties;
        let seconds = match how {
            Unfinished::NoAuth => penalties.noauth,
            Unfinished::GraceExceeded => penalties.grace_exceeded,
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.limits.exempt.contains(ip) {
            self.penalise(&mut state, source_of(ip), seconds, now);
        }
    }

    fn penalise(&self, state: &mut State, source: IpAddr, seconds: u32, now: Instant) {
        let Penalties { max, min, .. } = self.limits.penalties;
        if seconds == 0 || self.limits.exempt.contains(source) {
            return;
        }
        let Some(entry) = state.source(source, &self.limits, now) else { return };
        let (before, enforced) = entry.penalty.map_or((now, false), |(until, enforced)| (until.max(now), enforced));
        let until = (before + Duration::from_secs(seconds.into())).min(now + Duration::from_secs(max.into()));
        let left = until.duration_since(now);
        let enforce = enforced || left > Duration::from_secs(min.into());
        if enforce && !enforced {
            info!(%source, seconds = left.as_secs(), "penalty: SSH connections from this address are refused: too many ended without logging in");
        }
        entry.penalty = Some((until, enforce));
    }

    /// How many connections wait to log in.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).waiting.len()
    }
}

impl State {
    fn waiting_of(&self, source: IpAddr) -> usize {
        self.waiting.values().filter(|waiting| waiting.source == source).count()
    }

    /// The oldest waiting connection of the address that holds the most
    /// (of those that hold as many, the one whose oldest is oldest).
    fn oldest_of_the_most(&self) -> Option<u64> {
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for waiting in self.waiting.values() {
            *counts.entry(waiting.source).or_default() += 1;
        }
        let mut most: Option<(usize, u64)> = None;
        for (id, waiting) in &self.waiting {
            let count = counts.get(&waiting.source).copied().unwrap_or(0);
            if most.is_none_or(|(held, _)| count > held) {
                most = Some((count, *id));
            }
        }
        most.map(|(_, id)| id)
    }

    /// `source`'s past, made if new; `None` when too many are remembered
    /// (pruned at most once a second of those that have nothing to keep).
    fn source(&mut self, source: IpAddr, limits: &Limits, now: Instant) -> Option<&mut Source> {
        let (rate, burst) = (f64::from(limits.rate), limits.burst());
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            if self.pruned.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
                return None;
            }
            self.pruned = Some(now);
            self.sources.retain(|_, entry| entry.remembers(rate, burst, now));
            if self.sources.len() >= MAX_SOURCES {
                return None;
            }
        }
        Some(self.sources.entry(source).or_insert_with(|| Source {
            tokens: burst,
            refilled: now,
            over_rate: false,
            penalty: None,
        }))
    }
}

impl Source {
    /// How much longer it is refused for its penalty, if it is.
    fn refused_for(&mut self, now: Instant) -> Option<Duration> {
        match self.penalty {
            Some((until, _)) if until <= now => {
                self.penalty = None;
                None
            }
            Some((until, true)) => Some(until.duration_since(now)),
            _ => None,
        }
    }

    /// Whether forgetting it would change anything: a penalty not run out,
    /// or a rate not back to a whole burst.
    fn remembers(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let penalised = self.penalty.is_some_and(|(until, _)| until > now);
        let refilling = self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate < burst;
        penalised || refilling
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        // Gone already if it was cut; an id is never reused.
        self.startups.state.lock().unwrap_or_else(PoisonError::into_inner).waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> Limits {
        Limits { total, per_source, rate: 1000, penalties: Penalties::OFF, exempt: AddressList::none() }
    }

    #[test]
    fn the_oldest_of_an_address_and_then_of_the_one_holding_most_make_room() {
        let startups = Startups::new(limits(3, 2));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let admit = |ip| startups.admit(ip).expect("admitted");
        let first = admit(a);
        let second = admit(a);
        let third = admit(a);
        assert!(first.evicted.is_cancelled(), "a's oldest makes room for a's third");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(startups.len(), 2);
        let other = admit(b);
        assert_eq!(startups.len(), 3);
        // Past the total, a holds the most: its oldest goes, not b's older one.
        let fourth = admit(a);
        assert!(second.evicted.is_cancelled(), "the oldest of the address holding most makes room");
        assert!(!other.evicted.is_cancelled() && !third.evicted.is_cancelled());
        drop((first, second));
        assert_eq!(startups.len(), 3, "dropping a cut one counts right");
        drop((third, fourth, other));
        assert_eq!(startups.len(), 0);
    }

    #[test]
    fn a_flood_from_one_address_never_cuts_the_lone_connection_of_another() {
        let startups = Startups::new(limits(10, 10));
        let (flood, user) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let mut flooding: Vec<Startup> = (0..10).map(|_| startups.admit(flood).expect("admitted")).collect();
        let login = startups.admit(user).expect("admitted");
        for _ in 0..1000 {
            flooding.push(startups.admit(flood).expect("admitted"));
        }
        assert!(!login.evicted.is_cancelled());
        assert_eq!(startups.len(), 10);
        // When every address holds one, the oldest goes.
        drop(flooding);
        let others: Vec<Startup> =
            (1..=9).map(|n| startups.admit(IpAddr::from([10, 0, 1, n])).expect("admitted")).collect();
        let _newest = startups.admit(IpAddr::from([10, 0, 2, 1])).expect("admitted");
        assert!(login.evicted.is_cancelled() && !others.iter().any(|other| other.evicted.is_cancelled()));
    }

    #[test]
    fn an_address_over_its_rate_is_refused_and_refills_with_time() {
        let startups = Startups::new(Limits { rate: 2, ..limits(100, 100) });
        let (ip, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        let admitted: Vec<Startup> = (0..10).map(|_| startups.admit_at(ip, start).expect("within the burst")).collect();
        assert_eq!(startups.admit_at(ip, start).err(), Some(Refused::Rate));
        assert!(startups.admit_at(other, start).is_ok(), "another address has its own rate");
        let later = start + Duration::from_millis(600);
        assert!(startups.admit_at(ip, later).is_ok(), "one more after half a second at 2 a second");
        assert_eq!(startups.admit_at(ip, later).err(), Some(Refused::Rate));
        drop(admitted);
    }

    #[test]
    fn penalties_add_up_are_enforced_past_min_and_run_out() {
        let penalties = Penalties { noauth: 5, grace_exceeded: 20, evicted: 1, max: 30, min: 10 };
        let startups = Startups::new(Limits { penalties, ..limits(100, 100) });
        let (ip, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let now = Instant::now();
        startups.unfinished_at(ip, Unfinished::NoAuth, now);
        startups.unfinished_at(ip, Unfinished::NoAuth, now);
        assert!(startups.admit_at(ip, now).is_ok(), "10 s is not past min");
        startups.unfinished_at(ip, Unfinished::GraceExceeded, now);
        let Err(Refused::Penalised(left)) = startups.admit_at(ip, now) else { panic!("enforced past min") };
        assert_eq!(left, Duration::from_secs(30), "capped at max");
        assert!(startups.admit_at(other, now).is_ok());
        assert!(startups.admit_at(ip, now + Duration::from_secs(31)).is_ok(), "run out");
        // An IPv6 address is counted with its /64.
        let (v6, neighbour) = ("2001:db8::1".parse().expect("ip"), "2001:db8::ffff:2".parse().expect("ip"));
        for _ in 0..3 {
            startups.unfinished(v6, Unfinished::NoAuth);
        }
        assert!(matches!(startups.admit(neighbour), Err(Refused::Penalised(_))));
    }

    #[test]
    fn addresses_with_nothing_to_remember_are_forgotten_when_too_many() {
        let penalties = Penalties { noauth: 100, ..Penalties::default() };
        let startups = Startups::new(Limits { penalties, ..limits(10, 10) });
        let now = Instant::now();
        let penalised = IpAddr::from([192, 0, 2, 1]);
        startups.unfinished_at(penalised, Unfinished::NoAuth, now);
        for n in 0..u32::try_from(MAX_SOURCES).expect("small") {
            drop(startups.admit_at(IpAddr::from((10 << 24 | n).to_be_bytes()), now));
        }
        let sources = |startups: &Startups| startups.state.lock().expect("not poisoned").sources.len();
        assert_eq!(sources(&startups), MAX_SOURCES);
        // Every rate is whole again a second later: all but the penalised one go.
        let later = now + Duration::from_secs(2);
        assert!(startups.admit_at(IpAddr::from([10, 255, 0, 1]), later).is_ok());
        assert_eq!(sources(&startups), 2);
        assert!(matches!(startups.admit_at(penalised, later), Err(Refused::Penalised(_))));
    }

    #[test]
    fn exempt_addresses_are_never_refused() {
        let limits =
            Limits { rate: 1, penalties: Penalties::default(), exempt: AddressList::loopback(), ..limits(100, 100) };
        let startups = Startups::new(limits);
        let loopback = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..100 {
            startups.unfinished(loopback, Unfinished::GraceExceeded);
        }
        let admitted: Vec<Startup> = (0..50).map(|_| startups.admit(loopback).expect("exempt")).collect();
        drop(admitted);
        assert!(startups.admit("::1".parse().expect("ip")).is_ok());
    }
}
