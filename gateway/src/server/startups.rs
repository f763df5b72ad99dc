//! SSH connections that have not logged in yet, as OpenSSH's `MaxStartups`
//! and `PerSourceMaxStartups` count them. Past a limit, the oldest such
//! connection (of the same address, for the per-address limit) is cut to
//! make room, rather than the new one refused: idle connections from behind
//! one address cannot lock out a real user from behind the same address,
//! since the user's connection is always the newest.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// The connections waiting to log in, oldest first.
pub struct Startups {
    total: usize,
    per_source: usize,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, (IpAddr, CancellationToken)>,
    by_source: HashMap<IpAddr, usize>,
}

/// One connection's place until it logs in (or ends): dropping it frees it.
pub struct Startup {
    startups: Arc<Startups>,
    id: u64,
    source: IpAddr,
    /// Cancelled when the connection is cut to make room.
    pub evicted: CancellationToken,
}

impl Startups {
    pub fn new(total: usize, per_source: usize) -> Arc<Startups> {
        Arc::new(Startups { total: total.max(1), per_source: per_source.max(1), waiting: Mutex::default() })
    }

    /// Counts a new connection from `source`, cutting the oldest waiting one
    /// of `source` (or of all) when that would pass a limit.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Startup {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
            let oldest = waiting.by_age.iter().find(|(_, (ip, _))| *ip == source).map(|(id, _)| *id);
            if let Some(id) = oldest {
                waiting.cut(id);
            }
        }
        if waiting.by_age.len() >= self.total
            && let Some(id) = waiting.by_age.keys().next().copied()
        {
            waiting.cut(id);
        }
        let (id, evicted) = (waiting.next, CancellationToken::new());
        waiting.next += 1;
        waiting.by_age.insert(id, (source, evicted.clone()));
        *waiting.by_source.entry(source).or_default() += 1;
        Startup { startups: Arc::clone(self), id, source, evicted }
    }

    /// How many connections wait to log in.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).by_age.len()
    }
}

impl Waiting {
    /// Cuts connection `id` and forgets it.
    fn cut(&mut self, id: u64) {
        if let Some((_, evicted)) = self.remove(id) {
            evicted.cancel();
        }
    }

    fn remove(&mut self, id: u64) -> Option<(IpAddr, CancellationToken)> {
        let (source, evicted) = self.by_age.remove(&id)?;
        if let Some(count) = self.by_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.by_source.remove(&source);
            }
        }
        Some((source, evicted))
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        let mut waiting = self.startups.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Gone already if it was cut; an id is never reused.
        if waiting.by_age.get(&self.id).is_some_and(|(ip, _)| *ip == self.source) {
            waiting.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_of_an_address_and_then_of_all_make_room() {
        let startups = Startups::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = startups.admit(a);
        let second = startups.admit(a);
        let third = startups.admit(a);
        assert!(first.evicted.is_cancelled(), "a's oldest makes room for a's third");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(startups.len(), 2);
        let other = startups.admit(b);
        assert_eq!(startups.len(), 3);
        let fifth = startups.admit(b);
        assert!(second.evicted.is_cancelled(), "the oldest of all makes room past the total");
        assert!(!other.evicted.is_cancelled() && !fifth.evicted.is_cancelled());
        drop((first, second, third));
        assert_eq!(startups.len(), 2, "dropping the cut or a waiting one counts right");
        drop((other, fifth));
        assert_eq!(startups.len(), 0);
    }
}
