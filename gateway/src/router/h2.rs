//! HTTP/2 clients (over TLS, by ALPN), served by hyper: each request goes
//! through [`Forwarder::handle`]. A connection with no request open is idle:
//! it closes after [`IDLE_TIMEOUT`], as an idle HTTP/1.1 connection does,
//! however many PINGs its client sends meanwhile (each is answered), and
//! it may be closed sooner to make room (`max_connections`). The router
//! PINGs its clients too, and closes a connection whose client stops
//! answering. A request's body that stops coming is cut by
//! `body_timeout` ([`super::upstream::ClientBody`]), and so is a client
//! that stops taking an answer (its flow-control window left shut): hyper
//! asks an answer's body for more only once the client has room, so an
//! answer not asked for more within `body_timeout` closes the connection.
//! A connection holds at most [`MAX_STREAMS`] requests at once, each with
//! a connection to the app.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::debug;

use super::connections::Registration;
use super::route::Peer;

mod forward;

pub use self::forward::Forwarder;

/// How long a connection with no request open is kept: as long as an
/// idle HTTP/1.1 connection.
const IDLE_TIMEOUT: Duration = super::h1::HEADER_READ_TIMEOUT;
/// How long an idle connection gets to say that it closes (GOAWAY; hyper
/// would wait for its client to answer a PING first). One told to make room
/// gets one go at it: the room is needed now.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the router PINGs a client, and how long it waits for the answer.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The most a request's headers may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most requests one connection may have open at once (hyper's default
/// is 200): each holds a connection to the app, a file of the router's.
const MAX_STREAMS: u32 = 32;
/// How often a connection with requests open looks for one whose client
/// stopped taking its answer.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Serves one HTTP/2 client connection until it ends: idle too long, told
/// to make room, or, when the router stops, once its requests are answered.
pub async fn serve<IO>(io: TokioIo<IO>, forwarder: Arc<Forwarder>, peer: Peer, signal: Registration)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let addr = peer.addr;
    let streams = Arc::new(Streams::new(forwarder.routing().listeners().body_timeout));
    let service = service_fn({
        let streams = Arc::clone(&streams);
        move |req| {
            let (forwarder, peer, open) = (Arc::clone(&forwarder), Arc::clone(&peer), streams.open());
            async move {
                let answer = forwarder.handle(req, &peer).await;
                open.handed();
                Ok::<_, Infallible>(answer.map(|body| Counted { body, open }))
            }
        }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        close = streams.closing(&signal) => {
            debug!(peer = %addr, ?close, "router: closing an HTTP/2 connection");
            // GOAWAY: the requests open finish, no new one starts.
            connection.as_mut().graceful_shutdown();
            match close {
                Close::Stop => connection.await,
                Close::Idle => tokio::time::timeout(CLOSE_TIMEOUT, connection).await.unwrap_or(Ok(())),
                Close::Evicted | Close::Stalled => {
                    tokio::time::timeout(Duration::ZERO, connection).await.unwrap_or(Ok(()))
                }
            }
        }
    };
    if let Err(err) = served {
        debug!(peer = %addr, error = %err, "router connection ended");
    }
}

/// Why a connection closes.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// The router stops.
    Stop,
    /// No request for [`IDLE_TIMEOUT`].
    Idle,
    /// Told to make room.
    Evicted,
    /// Its client took no more of an answer within `body_timeout`.
    Stalled,
}

/// A connection's open requests, counted from the request's head to the
/// end of its answer's body.
struct Streams {
    open: AtomicUsize,
    /// Told when the count leaves or reaches zero.
    changed: Notify,
    /// Since when each open answer has waited for hyper to ask it for more
    /// (milliseconds after `epoch`, 0 while it is asked).
    handed: Mutex<Vec<Weak<AtomicU64>>>,
    epoch: Instant,
    /// `body_timeout`.
    stall: Duration,
}

/// One open request, until its answer's body is done.
struct Open {
    streams: Arc<Streams>,
    /// Since when its answer waits to be asked for more; 0 while asked.
    handed: Arc<AtomicU64>,
}

impl Streams {
    fn new(stall: Duration) -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            changed: Notify::new(),
            handed: Mutex::default(),
            epoch: Instant::now(),
            stall,
        }
    }

    fn open(self: &Arc<Self>) -> Open {
        if self.open.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_one();
        }
        let handed = Arc::new(AtomicU64::new(0));
        let mut all = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|clock| clock.strong_count() > 0);
        all.push(Arc::downgrade(&handed));
        Open { streams: Arc::clone(self), handed }
    }

    /// Now, in milliseconds after the epoch, never 0.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether an open answer has waited `stall` to be asked for more.
    fn stalled(&self) -> bool {
        let now = self.now();
        let stall = u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX);
        let all = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().filter_map(Weak::upgrade).any(|clock| {
            let since = clock.load(Ordering::Acquire);
            since != 0 && now.saturating_sub(since) >= stall
        })
    }

    /// Until the connection must close: idle for [`IDLE_TIMEOUT`], told to
    /// make room while idle, or the router stops.
    async fn closing(&self, signal: &Registration) -> Close {
        let closed = |signal: &Registration| if signal.is_evicted() { Close::Evicted } else { Close::Stop };
        loop {
            let changed = self.changed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                signal.waiting(true);
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(IDLE_TIMEOUT) => return Close::Idle,
                    () = signal.closing(true) => return closed(signal),
                }
            } else {
                if !signal.busy() {
                    return Close::Evicted;
                }
                if self.stalled() {
                    return Close::Stalled;
                }
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(STALL_CHECK) => {}
                    () = signal.closing(true) => return closed(signal),
                }
            }
        }
    }
}

impl Open {
    /// Its answer is handed to hyper, which asks it for more once the
    /// client has room: from now on, until it is asked.
    fn handed(&self) {
        self.handed.store(self.streams.now(), Ordering::Release);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.streams.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.streams.changed.notify_one();
        }
    }
}

/// An answer's body, its request counted open until it is done.
struct Counted<B> {
    body: B,
    open: Open,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        // Asked: the client had room. A frame handed over waits for more.
        this.open.handed.store(0, Ordering::Release);
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.open.handed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
