//! The start check: does the app answer HTTP on its port? And the health
//! checks an app declares in its app.json, which say more precisely when an
//! instance is ready.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{CheckFailed, RunError};

/// The most bytes of an answer a check reads.
const MAX_ANSWER: u64 = 1024 * 1024;

/// One check of a process type, in Dokku's app.json format. Times are in
/// seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `startup` (the default), `readiness` or `liveness`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The path to GET; it must answer below 400.
    #[serde(default)]
    pub path: Option<String>,
    /// Text the answer's body must hold.
    #[serde(default)]
    pub content: Option<String>,
    /// How long one attempt may take [default: 5].
    #[serde(default)]
    pub timeout: Option<u64>,
    /// How many attempts before the instance is given up [default: 5].
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The pause between attempts [default: 5].
    #[serde(default)]
    pub wait: Option<u64>,
    /// The pause before the first attempt [default: 0].
    #[serde(default)]
    pub initial_delay: Option<u64>,
    /// The port to check [default: `PORT`].
    #[serde(default)]
    pub port: Option<u16>,
}

impl HealthCheck {
    /// Startup and readiness checks decide when an instance is ready.
    pub fn decides_start(&self) -> bool {
        !matches!(self.kind.as_deref(), Some("liveness"))
    }

    /// `GET /health for "ok", 5 attempts 5 s apart`.
    pub fn describe(&self) -> String {
        let content = self.content.as_ref().map(|c| format!(" for {c:?}")).unwrap_or_default();
        let path = self.path.as_deref().unwrap_or("/");
        match self.attempts() {
            1 => format!("GET {path}{content}, once"),
            attempts => format!("GET {path}{content}, {attempts} attempts {} s apart", self.wait().as_secs()),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(5).clamp(1, 600))
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(5).clamp(1, 1000)
    }

    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait.unwrap_or(5).min(600))
    }

    pub fn initial_delay(&self) -> Duration {
        Duration::from_secs(self.initial_delay.unwrap_or(0).min(600))
    }

    /// One attempt against the instance at `addr` (its `PORT`): `Ok` when it
    /// passes, else why not.
    pub async fn probe(&self, addr: SocketAddr, host: &str) -> Result<(), CheckFailed> {
        let port = self.port.unwrap_or(addr.port());
        let path = self.path.clone().unwrap_or_else(|| "/".into());
        let attempt = get(SocketAddr::new(addr.ip(), port), host, &path, self.content.is_some());
        let (status, body) = match tokio::time::timeout(self.timeout(), attempt).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(source)) => return Err(CheckFailed::Io { path, port, source }),
            Err(_) => return Err(CheckFailed::Timeout { path, port, seconds: self.timeout().as_secs() }),
        };
        if self.path.is_some() && status >= 400 {
            return Err(CheckFailed::Status { path, status });
        }
        match &self.content {
            Some(content) if !body.contains(content.as_str()) => {
                Err(CheckFailed::Content { path, status, content: content.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// GETs `path` over HTTP/1.0 and answers the status and (with `body`) the
/// body as text, read up to [`MAX_ANSWER`].
async fn get(addr: SocketAddr, host: &str, path: &str, body: bool) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: nap-check\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    if body {
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    } else {
        let mut head = [0u8; 12];
        let read = stream.read(&mut head).await?;
        answer.extend_from_slice(&head[..read]);
        if read < 12 {
            stream.take(12 - read as u64).read_to_end(&mut answer).await?;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

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
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The start check every runner on a host uses: polls until the app answers
/// HTTP at the address `probe` finds (the container's on its app's network;
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

/// The start check of an app that declares one: after its initial delay,
/// up to `attempts` tries of `check` at the address `probe` finds, `wait`
/// apart. `Err` from `probe` ends it at once; `Ok(Err(why))` says why the
/// last attempt failed.
pub(crate) async fn until_healthy<P, F>(
    check: &HealthCheck,
    host: &str,
    mut probe: P,
) -> Result<Result<SocketAddr, CheckFailed>, RunError>
where
    P: FnMut() -> F,
    F: Future<Output = Result<Option<SocketAddr>, RunError>>,
{
    tokio::time::sleep(check.initial_delay()).await;
    let mut why = CheckFailed::NoAddress;
    for attempt in 1..=check.attempts() {
        if attempt > 1 {
            tokio::time::sleep(check.wait()).await;
        }
        let Some(addr) = probe().await? else { continue };
        match check.probe(addr, host).await {
            Ok(()) => return Ok(Ok(addr)),
            Err(failed) => why = failed,
        }
    }
    Ok(Err(why))
}
