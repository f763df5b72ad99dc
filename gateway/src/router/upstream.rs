//! The router's connections to the apps' instances: HTTP/1.1 over TCP,
//! kept open between requests in a pool per instance address.
//!
//! Each connection is hyper's `client::conn::http1`, driven by a task of
//! its own. A request takes the connection last put back (it is the most
//! likely to be open still), or opens one; the connection goes back when
//! the answer's body has been read to its end ([`Checkin`]). A pooled
//! connection that turns out closed before the request went out costs
//! nothing: the request is sent on another. The pool replaced hyper-util's
//! `legacy::Client`, whose general pool cost the router about 4 µs of CPU
//! per request (`docs/benchmarks.md`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

/// How long a connection to an upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(90);
/// How many idle connections are kept per instance.
const MAX_IDLE: usize = 1024;

/// What the router sends an app: the client's request body, or none (a
/// request sent again has no body).
pub type Outgoing = Either<ClientBody, Empty<Bytes>>;

/// A client's request body on its way to the app. Each part must come
/// within `body_timeout` of the last (or of the request's head, once the
/// app is asked), else the body ends with [`ClientBodyError::Timeout`] and
/// the client gets 408: a client cannot hold the router by never sending
/// the body it announced.
pub struct ClientBody {
    body: Incoming,
    timeout: Duration,
    /// Armed while the body waits for its client (made on its first wait).
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

/// Why a client's request body ended short.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error(transparent)]
    Read(#[from] hyper::Error),
    #[error("the request's body did not arrive within {}s", .0.as_secs())]
    Timeout(Duration),
}

impl ClientBody {
    pub fn new(body: Incoming, timeout: Duration) -> ClientBody {
        ClientBody { body, timeout, sleep: None, waiting: false }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(ClientBodyError::Read)));
        }
        let deadline = tokio::time::Instant::now() + this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            this.waiting = true;
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(ClientBodyError::Timeout(this.timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why an upstream took no request.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { addr: SocketAddr },
    #[error("{addr} gave no answer: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Whether the request failed because its client's body did not come
    /// in time ([`ClientBody`]).
    pub fn body_timed_out(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = cause {
            if matches!(err.downcast_ref::<ClientBodyError>(), Some(ClientBodyError::Timeout(_))) {
                return true;
            }
            cause = err.source();
        }
        false
    }
}

/// The pool of idle connections, per instance address.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

struct Idle {
    sender: SendRequest<Outgoing>,
    since: Instant,
}

/// A connection lent to one request: it goes back to the pool on
/// [`Checkin::put_back`], when the answer's body has been read whole.
pub struct Checkin {
    upstreams: Arc<Upstreams>,
    addr: SocketAddr,
    sender: SendRequest<Outgoing>,
}

impl Checkin {
    pub fn put_back(self) {
        self.upstreams.put_back(self.addr, self.sender);
    }
}

impl Upstreams {
    /// Sends `req` (in origin form, with its `Host`) to `addr`, on an idle
    /// connection or a new one; the answer, and its connection to put back.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, Checkin), UpstreamError> {
        loop {
            let (mut sender, pooled) = match self.take(addr) {
                Some(sender) => (sender, true),
                None => (connect(addr).await?, false),
            };
            if let Err(source) = sender.ready().await {
                if pooled {
                    continue;
                }
                return Err(UpstreamError::Exchange { addr, source });
            }
            match sender.try_send_request(req).await {
                Ok(answer) => return Ok((answer, Checkin { upstreams: Arc::clone(self), addr, sender })),
                Err(mut failed) => match failed.take_message() {
                    // Closed before the request went out: another connection takes it.
                    Some(unsent) if pooled => {
                        debug!(%addr, error = %failed.error(), "router: a pooled connection had closed");
                        req = unsent;
                    }
                    _ => return Err(UpstreamError::Exchange { addr, source: failed.into_error() }),
                },
            }
        }
    }

    /// The idle connection to `addr` put back last that is still open;
    /// closed and expired ones are dropped on the way.
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Outgoing>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = idle.get_mut(&addr)?;
        while let Some(Idle { sender, since }) = pool.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE {
                return Some(sender);
            }
        }
        idle.remove(&addr);
        None
    }

    fn put_back(&self, addr: SocketAddr, sender: SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = idle.entry(addr).or_default();
        if pool.len() < MAX_IDLE {
            pool.push(Idle { sender, since: Instant::now() });
        }
    }

    /// Closes the connections idle for longer than [`IDLE`], and forgets
    /// the closed ones (an instance gone closes its end).
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for pool in idle.values_mut() {
            pool.retain(|Idle { sender, since }| !sender.is_closed() && since.elapsed() < IDLE);
        }
        idle.retain(|_, pool| !pool.is_empty());
    }

    /// Sweeps every [`IDLE`] until the runtime ends, or the pool goes.
    pub fn keep_swept(self: &Arc<Self>) {
        super::every(IDLE, Arc::downgrade(self), Upstreams::sweep);
    }
}

/// A new connection to `addr`, its task spawned.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Outgoing>, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Exchange { addr, source })?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            debug!(%addr, error = %err, "router: an upstream connection ended");
        }
    });
    Ok(sender)
}
