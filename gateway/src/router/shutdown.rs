//! How the router tells its open HTTP/1.1 connections to finish what they
//! are doing and close. Each connection has a signal of its own, which it
//! checks whenever it waits for a request; the router sets them all when it
//! stops. (A `CancellationToken` shared by every connection would do the
//! same, but waiting on it takes its one lock on every request, and every
//! connection would take that lock.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// The signals of the open connections.
#[derive(Default)]
pub struct Shutdown {
    signals: Mutex<HashMap<u64, Arc<Signal>>>,
    next: AtomicU64,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Signal {
    stopped: AtomicBool,
    waker: AtomicWaker,
}

/// One connection's signal, for as long as the connection is open.
pub struct Registration {
    shutdown: Arc<Shutdown>,
    id: u64,
    signal: Arc<Signal>,
}

impl Shutdown {
    /// A signal for a new connection (set at once if the router has stopped).
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        self.signals.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Arc::clone(&signal));
        if self.stopped.load(Ordering::Acquire) {
            signal.stopped.store(true, Ordering::Release);
        }
        Registration { shutdown: Arc::clone(self), id, signal }
    }

    /// Sets every connection's signal.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for signal in self.signals.lock().unwrap_or_else(PoisonError::into_inner).values() {
            signal.stopped.store(true, Ordering::Release);
            signal.waker.wake();
        }
    }
}

impl Registration {
    pub fn is_stopped(&self) -> bool {
        self.signal.stopped.load(Ordering::Acquire)
    }

    /// Ready once the router stops.
    pub fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        self.signal.waker.register(cx.waker());
        if self.is_stopped() { Poll::Ready(()) } else { Poll::Pending }
    }

    pub async fn stopped(&self) {
        std::future::poll_fn(|cx| self.poll_stopped(cx)).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shutdown.signals.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Shutdown;

    #[tokio::test]
    async fn stopping_wakes_every_connection_and_marks_later_ones() {
        let shutdown = Arc::new(Shutdown::default());
        let (first, second) = (shutdown.register(), shutdown.register());
        let waiting = tokio::spawn(async move { first.stopped().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_stopped());
        shutdown.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("ran");
        assert!(second.is_stopped() && shutdown.register().is_stopped());
        drop(second);
        assert!(shutdown.signals.lock().expect("not poisoned").len() <= 1);
    }
}
