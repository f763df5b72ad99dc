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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// How long a connection to an upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(90);
/// How many idle connections are kept per instance.
const MAX_IDLE: usize = 1024;

/// What the router sends an app: the client's request body, or none (a
/// request sent again has no body).
pub type Outgoing = Either<Incoming, Empty<Bytes>>;

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
