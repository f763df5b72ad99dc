//! nap-test-upstream: the app the router tests run behind nap (keep-alive, WebSockets, long downloads, slow answers).
//!
//! Serves HTTP/1.1 with keep-alive on `0.0.0.0:$PORT` (default 5000):
//!
//! - `GET /` answers the reply string and a newline: `$REPLY`, else the
//!   content of `/reply`, else `hello from upstream` (each trimmed);
//! - `GET /download?bytes=N&chunk=C&delay_ms=D` streams N bytes of `x`;
//! - `GET /sleep?ms=N` answers `slept N` after N ms;
//! - `GET /burn?ms=N` keeps a CPU busy for N ms, then answers `burned N`;
//! - `GET /ws` (a WebSocket upgrade) echoes text messages as `REPLY: MESSAGE`;
//! - `GET /headers` answers the request headers, one `name: value` a line;
//! - `GET /chunked?n=N` answers `part 1` to `part N` as N chunks, with no
//!   Content-Length;
//! - `POST /echo` answers the request's body;
//! - `GET /hangup` closes the connection without an answer.
//!
//! On SIGTERM (or SIGINT) it stops accepting and lets the requests in flight
//! finish, for up to [`DRAIN`].

mod routes;
mod ws;

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// How long requests in flight may take to finish once SIGTERM came.
const DRAIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let port = match std::env::var("PORT").map(|port| port.parse::<u16>().map_err(|_| port)) {
        Err(_) => 5000,
        Ok(Ok(port)) => port,
        Ok(Err(port)) => {
            eprintln!("nap-test-upstream: PORT is not a port number: {port:?}");
            return ExitCode::from(2);
        }
    };
    let reply: Arc<str> = reply().into();
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("nap-test-upstream: cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("nap-test-upstream: cannot handle signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {port}");
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, Arc::clone(&reply), graceful.watcher()));
                }
                // Out of file descriptors, say: let some connections end.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        eprintln!("nap-test-upstream: requests still in flight after {DRAIN:?}; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// Serves one connection: keep-alive HTTP/1.1, upgrades allowed.
async fn serve(stream: TcpStream, reply: Arc<str>, watcher: Watcher) {
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let service = service_fn(move |request| routes::handle(request, Arc::clone(&reply)));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    // A client that goes away mid-request is no news to anyone.
    let _ = watcher.watch(connection).await;
}

/// What `/` answers (without its newline): `$REPLY`, else `/reply`, else the default.
fn reply() -> String {
    let text = std::env::var("REPLY").ok().or_else(|| std::fs::read_to_string("/reply").ok());
    text.as_deref().unwrap_or("hello from upstream").trim().to_owned()
}
