//! Open TCP connections to the apps' instances, kept between requests in
//! a pool per instance address. A request takes the connection put back
//! last (the most likely to be open still), or opens one; a connection goes
//! back only when its answer was read to its end (a client connection
//! keeps the last one it used until its next request goes elsewhere, or it
//! closes: most requests then take no lock). One that the instance
//! closed while it idled is noticed before it is lent, from the readiness
//! tokio already holds for it, with no system call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// How long a connection to an upstream may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept.
const IDLE: Duration = Duration::from_secs(90);
/// How many idle connections are kept per instance.
const MAX_IDLE: usize = 1024;

/// Why no connection to an upstream could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Refused {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    Timeout { addr: SocketAddr },
}

/// The idle connections, per instance address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

/// A connection lent to one request, and whether it came from the pool
/// (then the instance may have closed it just as it was lent).
pub struct Lent {
    pub stream: TcpStream,
    pub pooled: bool,
}

impl Pool {
    /// An open connection to `addr`: `held` if it goes there (the one the
    /// client's connection used last, kept out of the pool: no lock taken),
    /// or an idle one, or a new one.
    pub async fn get(&self, addr: SocketAddr, held: Option<(SocketAddr, TcpStream)>) -> Result<Lent, ConnectError> {
        match held {
            Some((to, stream)) if to == addr && !has_spoken(&stream) => return Ok(Lent { stream, pooled: true }),
            Some((to, stream)) => self.put_back(to, stream),
            None => {}
        }
        if let Some(stream) = self.take(addr) {
            return Ok(Lent { stream, pooled: true });
        }
        connect(addr).await.map(|stream| Lent { stream, pooled: false })
    }

    /// The idle connection to `addr` put back last that is still open;
    /// closed and expired ones are dropped on the way.
    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = idle.get_mut(&addr)?;
        while let Some((stream, since)) = pool.pop() {
            if since.elapsed() < IDLE && !has_spoken(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps `stream`, whose last answer was read whole, for the next request to `addr`.
    pub fn put_back(&self, addr: SocketAddr, stream: TcpStream) {
        if has_spoken(&stream) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = idle.entry(addr).or_default();
        if pool.len() < MAX_IDLE {
            pool.push((stream, Instant::now()));
        }
    }

    /// Closes the connections idle for longer than [`IDLE`] or closed by
    /// their instance (one that is gone, say).
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for pool in idle.values_mut() {
            pool.retain(|(stream, since)| since.elapsed() < IDLE && !has_spoken(stream));
        }
        idle.retain(|_, pool| !pool.is_empty());
    }

    /// Sweeps every [`IDLE`] until the runtime ends, or the pool goes.
    pub fn keep_swept(self: &Arc<Self>) {
        crate::router::every(IDLE, Arc::downgrade(self), Pool::sweep);
    }
}

/// Whether an idle connection became readable: the instance closed it, or
/// sent what nobody asked for. Either way it cannot carry a request.
fn has_spoken(stream: &TcpStream) -> bool {
    match stream.ready(Interest::READABLE).now_or_never() {
        Some(Ok(ready)) => ready.is_readable() || ready.is_read_closed(),
        Some(Err(_)) => true,
        None => false,
    }
}

/// A new connection to `addr`.
async fn connect(addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Refused { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr }),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
