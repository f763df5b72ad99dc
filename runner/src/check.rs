//! The start check: does the app answer HTTP on its port? And the free
//! host port a release is published on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::RunError;

/// One attempt: connects, sends `GET /`, and answers whether an HTTP status
/// line came back. Any status counts: a 404 still proves the app is up.
pub(crate) async fn answers_http(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: nap-start-check\r\n\r\n").await?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head == b"HTTP/")
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}

/// How often a starting release is checked.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// The start check every runner on a host uses: polls until the app answers
/// HTTP at the address `probe` finds (a container's published port, a
/// unit's), failing at once with `probe`'s error (the container exited, the
/// unit failed). `None`: no answer within `limit`.
pub(crate) async fn until_answering<P, F>(limit: Duration, mut probe: P) -> Result<Option<SocketAddr>, RunError>
where
    P: FnMut() -> F,
    F: Future<Output = Result<SocketAddr, RunError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let addr = probe().await?;
        if answers_http(addr).await {
            return Ok(Some(addr));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

/// A TCP port free on every host address right now.
pub(crate) fn free_host_port() -> Result<u16, RunError> {
    std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(RunError::NoFreePort)
}
