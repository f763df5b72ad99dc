//! The threads that serve the router's connections (`router_threads`).
//! Each is a single-threaded runtime that accepts on the router's
//! listeners and serves the connections it accepted to their end, as
//! nginx's workers do: a request never wakes another thread, which on a
//! host where the apps share the cores costs more than the request itself
//! (see docs/benchmarks.md). The route table, certificates, pools and
//! counters are shared; the store watch and the presence records stay on
//! the main runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::Serving;
use super::connections::Admission;

/// How often a thread says that the router is at `max_connections`, at most.
const AT_CAP_WARNING: Duration = Duration::from_secs(60);

/// Threads started, each waiting for what to serve with.
pub(super) struct Workers {
    starts: Vec<oneshot::Sender<Arc<Serving>>>,
    done: TaskTracker,
}

/// One thread's runtime and its own registration of the listeners.
struct Worker {
    runtime: Runtime,
    http: TcpListener,
    https: Option<TcpListener>,
}

impl Workers {
    /// Makes `count` threads that accept on `http` and `https`. Everything
    /// that can fail happens here, so a router that binds also serves.
    pub(super) fn new(
        count: usize,
        http: &std::net::TcpListener,
        https: Option<&std::net::TcpListener>,
    ) -> std::io::Result<Workers> {
        let (done, mut starts) = (TaskTracker::new(), Vec::with_capacity(count));
        for n in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let worker = {
                let _in = runtime.enter();
                let https = https.map(|l| l.try_clone().and_then(TcpListener::from_std)).transpose()?;
                Worker { http: TcpListener::from_std(http.try_clone()?)?, https, runtime }
            };
            let (start, started) = oneshot::channel();
            let token = done.token();
            std::thread::Builder::new().name(format!("nap-router-{n}")).spawn(move || {
                let _done = token;
                let Worker { runtime, http, https } = worker;
                runtime.block_on(async move {
                    // Never told: the router was dropped without running.
                    if let Ok(serving) = started.await {
                        accept(http, https, &serving).await;
                    }
                });
            })?;
            starts.push(start);
        }
        done.close();
        Ok(Workers { starts, done })
    }

    /// Serves with `serving` until its stop; answers once every thread has
    /// served its last connection.
    pub(super) async fn run(self, serving: &Arc<Serving>) {
        for start in self.starts {
            let _ = start.send(Arc::clone(serving));
        }
        self.done.wait().await;
    }
}

/// Accepts until `serving.stop`, then lets this thread's connections finish.
/// At `max_connections`, a new connection takes the place of one waiting
/// on its client, or is closed at once when every open one is busy.
async fn accept(http: TcpListener, https: Option<TcpListener>, serving: &Arc<Serving>) {
    let connections = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    let mut at_cap = |refused: bool| {
        if warned.is_none_or(|at| at.elapsed() >= AT_CAP_WARNING) {
            warned = Some(Instant::now());
            let max = serving.connections.max();
            if refused {
                warn!(max, "router: at max_connections, every connection busy: new connections are refused");
            } else {
                warn!(max, "router: at max_connections: the connections waiting longest on their clients are closed");
            }
        }
    };
    loop {
        let (stream, peer, secure) = tokio::select! {
            accepted = http.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(err) => { crate::following::accept_failed("router", &err).await; continue; }
            },
            accepted = accept_on(https.as_ref()) => match accepted {
                Ok((stream, peer)) => (stream, peer, true),
                Err(err) => { crate::following::accept_failed("router", &err).await; continue; }
            },
            () = serving.stop.cancelled() => break,
        };
        let signal = match serving.connections.register() {
            Admission::Room(signal) => signal,
            Admission::MadeRoom(signal) => {
                serving.metrics.made_room();
                at_cap(false);
                signal
            }
            Admission::Full => {
                serving.metrics.refused();
                at_cap(true);
                continue;
            }
        };
        let open = serving.metrics.connection();
        let serving = Arc::clone(serving);
        connections.spawn(async move {
            let _open = open;
            super::connection(stream, peer, secure, signal, &serving).await;
        });
    }
    // Closed now: new clients are refused rather than left waiting, and
    // another process may take the port while these connections drain.
    drop((http, https));
    serving.connections.stop();
    connections.close();
    connections.wait().await;
}

/// The next connection on `listener`; never, without one.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
