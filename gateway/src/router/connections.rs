//! The router's open client connections: how each is told to finish what
//! it is doing and close when the router stops, and the cap on how many
//! may be open (`max_connections`), past which a connection that waits on
//! its client is closed to make room.
//!
//! Each connection has a signal of its own, which it checks whenever it
//! waits; the router sets them all when it stops. (A `CancellationToken`
//! shared by every connection would do the same, but waiting on it takes
//! its one lock on every request, and every connection would take that
//! lock.) A connection also says, with one atomic store, when it waits on
//! its client ([`Registration::waiting`]) and when it works
//! ([`Registration::busy`]): only a waiting one is ever closed to make
//! room, first one idle between requests (the oldest connection; closing it
//! costs its client nothing), else the one stalled mid-request whose client
//! has sent nothing for longest (a request body
//! that does not come, a head sent a byte at a time).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;

/// The open connections.
pub struct Connections {
    open: Mutex<Open>,
    next: AtomicU64,
    stopped: AtomicBool,
    /// `max_connections`.
    max: usize,
    /// What the waiting times of [`State`] count from.
    epoch: Instant,
}

#[derive(Default)]
struct Open {
    /// Oldest first.
    signals: BTreeMap<u64, Arc<Signal>>,
    /// How many of them were told to close to make room, and have not yet.
    closing: usize,
}

/// What a connection is doing, as one word (see [`Registration::waiting`]).
struct State;

impl State {
    /// Working: reading or writing the app, or relaying to the client.
    const BUSY: u64 = 0;
    /// Waiting for the next request (or the first).
    const IDLE: u64 = 1;
    /// Waiting mid-request, since the milliseconds after the epoch below this bit.
    const STALLED: u64 = 1 << 62;
    /// Told to close to make room.
    const EVICTED: u64 = u64::MAX;
}

#[derive(Default)]
struct Signal {
    stopped: AtomicBool,
    state: AtomicU64,
    waker: AtomicWaker,
}

/// What becomes of a new connection.
pub enum Admission {
    Room(Registration),
    /// At the cap: another connection was told to close.
    MadeRoom(Registration),
    /// At the cap, and every open connection is busy.
    Full,
}

impl Admission {
    #[cfg(test)]
    fn expect(self, why: &str) -> Registration {
        match self {
            Admission::Room(registration) | Admission::MadeRoom(registration) => registration,
            Admission::Full => panic!("{why}"),
        }
    }

    #[cfg(test)]
    fn is_full(&self) -> bool {
        matches!(self, Admission::Full)
    }
}

/// One connection's signal and place, for as long as the connection is open.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    signal: Arc<Signal>,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            open: Mutex::default(),
            next: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            max: max.max(1),
            epoch: Instant::now(),
        })
    }

    /// A place for a new connection (its signal set at once if the router
    /// has stopped). At the cap, the waiting connection that
    /// [`Open::pick`]s is told to close; when every open one is busy, the
    /// new one is refused.
    pub fn register(self: &Arc<Self>) -> Admission {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let full = open.signals.len() - open.closing >= self.max;
        if full && !open.evict() {
            return Admission::Full;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal { state: AtomicU64::new(State::IDLE), ..Signal::default() });
        open.signals.insert(id, Arc::clone(&signal));
        drop(open);
        if self.stopped.load(Ordering::Acquire) {
            signal.stopped.store(true, Ordering::Release);
        }
        let registration = Registration { connections: Arc::clone(self), id, signal };
        if full { Admission::MadeRoom(registration) } else { Admission::Room(registration) }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Sets every connection's signal.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for signal in self.open.lock().unwrap_or_else(PoisonError::into_inner).signals.values() {
            signal.stopped.store(true, Ordering::Release);
            signal.waker.wake();
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).signals.len()
    }
}

impl Open {
    /// Tells the waiting connection that [`Open::pick`]s to close; whether one was.
    fn evict(&mut self) -> bool {
        // A connection that just changed what it does is looked at again.
        for _ in 0..4 {
            let Some((signal, state)) = self.pick() else { return false };
            if signal.state.compare_exchange(state, State::EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                signal.waker.wake();
                self.closing += 1;
                return true;
            }
        }
        false
    }

    /// The connection to close first: the oldest idle one, else the one
    /// stalled longest.
    fn pick(&self) -> Option<(&Signal, u64)> {
        let mut stalled: Option<(&Signal, u64)> = None;
        for signal in self.signals.values() {
            match signal.state.load(Ordering::Acquire) {
                State::BUSY | State::EVICTED => {}
                State::IDLE => return Some((signal, State::IDLE)),
                state => {
                    if stalled.is_none_or(|(_, since)| state < since) {
                        stalled = Some((signal, state));
                    }
                }
            }
        }
        stalled
    }
}

impl Registration {
    /// The router stops: whatever is in flight finishes, then the connection closes.
    pub fn is_stopped(&self) -> bool {
        self.signal.stopped.load(Ordering::Acquire)
    }

    /// Told to close now, to make room.
    pub fn is_evicted(&self) -> bool {
        self.signal.state.load(Ordering::Acquire) == State::EVICTED
    }

    /// The connection waits on its client from now: for a request
    /// (`between_requests`), or for more of one. It may be told to close
    /// to make room until it is [`Self::busy`] again.
    pub fn waiting(&self, between_requests: bool) {
        let state = if between_requests {
            State::IDLE
        } else {
            let since = u64::try_from(self.connections.epoch.elapsed().as_millis()).unwrap_or(State::STALLED - 1);
            State::STALLED | since.min(State::STALLED - 1)
        };
        let _ = self
            .signal
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now != State::EVICTED).then_some(state));
    }

    /// The connection works from now, and may no longer be closed to make
    /// room; `false` if it was told to close already.
    pub fn busy(&self) -> bool {
        self.signal
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now != State::EVICTED).then_some(State::BUSY))
            .is_ok()
    }

    /// Ready once the connection must close: told to make room, or, when
    /// it waits `between_requests`, the router stops.
    pub fn poll_closing(&self, between_requests: bool, cx: &mut Context<'_>) -> Poll<()> {
        let closing = || self.is_evicted() || between_requests && self.is_stopped();
        if closing() {
            return Poll::Ready(());
        }
        self.signal.waker.register(cx.waker());
        if closing() { Poll::Ready(()) } else { Poll::Pending }
    }

    pub async fn closing(&self, between_requests: bool) {
        std::future::poll_fn(|cx| self.poll_closing(between_requests, cx)).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.signals.remove(&self.id);
        if self.is_evicted() {
            open.closing -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Connections;

    #[tokio::test]
    async fn stopping_wakes_every_waiting_connection_and_marks_later_ones() {
        let connections = Connections::new(100);
        let (first, second) = (connections.register().expect("room"), connections.register().expect("room"));
        let waiting = tokio::spawn(async move { first.closing(true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_stopped());
        connections.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("ran");
        assert!(second.is_stopped() && connections.register().expect("room").is_stopped());
        drop(second);
        assert!(connections.len() <= 1);
    }

    #[tokio::test]
    async fn past_the_cap_the_idle_go_first_then_the_longest_stalled_and_busy_ones_never() {
        let connections = Connections::new(3);
        let register = || connections.register().expect("room");
        let (busy, stalled, idle) = (register(), register(), register());
        assert!(busy.busy());
        stalled.waiting(false);
        // The idle one goes first, although it is newer than the stalled one.
        let fourth = register();
        assert!(idle.is_evicted() && !stalled.is_evicted() && !busy.is_evicted());
        assert!(!idle.busy(), "an evicted connection cannot become busy");
        // Then the one stalled longest, though the one told first is still open.
        tokio::time::sleep(Duration::from_millis(5)).await;
        fourth.waiting(false);
        let fifth = register();
        assert!(stalled.is_evicted() && !fourth.is_evicted(), "the one stalled longest goes");
        drop((idle, stalled));
        assert!(fourth.busy() && fifth.busy());
        assert!(connections.register().is_full(), "every open connection is busy: the new one is refused");
        fifth.waiting(true);
        let closing = tokio::spawn(async move { fifth.closing(false).await });
        let sixth = register();
        tokio::time::timeout(Duration::from_secs(5), closing).await.expect("woken").expect("ran");
        drop((busy, fourth, sixth));
        assert_eq!(connections.len(), 0);
    }

    #[test]
    fn a_connection_told_to_close_counts_as_gone() {
        let connections = Connections::new(2);
        let (busy, idle) = (connections.register().expect("room"), connections.register().expect("room"));
        assert!(busy.busy());
        let third = connections.register().expect("room made");
        assert!(idle.is_evicted());
        drop(busy);
        // `idle` is still open, but told: `third` stays.
        let fourth = connections.register().expect("room");
        assert!(!third.is_evicted() && !fourth.is_evicted());
    }
}
