//! A tunnel between a client and an app once both switched protocols (a
//! WebSocket): bytes go both ways until either side closes, or until none
//! has crossed either way for the idle time (`body_timeout`), as nginx's
//! `proxy_read_timeout` ends a quiet WebSocket. A tunnel keeps its
//! connection busy, so without that end, quiet tunnels would hold the
//! router's connections (`max_connections`) for good.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a tunnel ended.
#[derive(Debug)]
pub enum Ended {
    /// A side closed (or failed: the error).
    Closed(io::Result<()>),
    /// Nothing crossed for the idle time.
    Idle,
}

/// Copies both ways between `client` and `app` until either closes, or
/// nothing crosses for `idle`.
pub async fn copy<C, A>(client: &mut C, app: &mut A, idle: Duration) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let clock = Arc::new(Clock { epoch: Instant::now(), last: AtomicU64::new(0) });
    let mut client = Watched { io: client, clock: Arc::clone(&clock) };
    let mut app = Watched { io: app, clock: Arc::clone(&clock) };
    let copying = tokio::io::copy_bidirectional(&mut client, &mut app);
    tokio::pin!(copying);
    loop {
        let quiet_until = clock.epoch + Duration::from_millis(clock.last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            copied = copying.as_mut() => return Ended::Closed(copied.map(|_| ())),
            () = tokio::time::sleep_until(quiet_until.into()) => {
                if clock.quiet_for() >= idle {
                    return Ended::Idle;
                }
            }
        }
    }
}

/// When bytes last crossed, in milliseconds after `epoch`.
struct Clock {
    epoch: Instant,
    last: AtomicU64,
}

impl Clock {
    fn crossed(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// One side of a tunnel, noting on the clock each read that brings bytes.
struct Watched<'a, T: ?Sized> {
    io: &'a mut T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.crossed();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Ended, copy};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_tunnel_lives_while_bytes_cross_and_ends_when_quiet() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut app, mut app_end) = tokio::io::duplex(64);
        let idle = Duration::from_millis(400);
        let tunnel = tokio::spawn(async move { copy(&mut client, &mut app, idle).await });
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            client_end.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            app_end.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
        }
        assert!(!tunnel.is_finished(), "alive while bytes cross, past the idle time in all");
        let ended = tokio::time::timeout(Duration::from_secs(5), tunnel).await.expect("ends when quiet");
        assert!(matches!(ended.expect("the tunnel"), Ended::Idle));
    }
}
