//! The start check: does the app answer HTTP on its port?

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
/// HTTP at the address `probe` finds (the container's on nap's network;
/// `None` while it has none yet), failing at once with `probe`'s error (the
/// container exited, the unit failed). `None`: no answer within `limit`.
pub(crate) async fn until_answering<P, F>(limit: Duration, mut probe: P) -> Result<Option<SocketAddr>, RunError>
where
    P: FnMut() -> F,
    F: Future<Output = Result<Option<SocketAddr>, RunError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(addr) = probe().await?
            && answers_http(addr).await
        {
            return Ok(Some(addr));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}
