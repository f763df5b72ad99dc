//! Plain HTTP/1.0 GETs, enough to ask a deployed app what it serves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// GETs `url` (`http://HOST:PORT/PATH`); answers the status and body.
pub fn get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    // CGI answers (busybox httpd passes them through) may end headers with bare newlines.
    let (head, body) = response.split_once("\r\n\r\n").or_else(|| response.split_once("\n\n"))?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Sends `request`, a whole request head, to `addr` (`HOST:PORT`); answers
/// the status, the response head and the body.
pub fn raw(addr: &str, request: &str) -> Option<(u16, String, String)> {
    let mut stream = connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n").or_else(|| response.split_once("\n\n"))?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// GETs `path` from `addr` as host `host`: name-based routing without DNS,
/// as `curl --resolve` does it.
pub fn get_host(addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    raw(addr, &format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")).map(|(status, _, body)| (status, body))
}

/// Waits up to `timeout` for `url` to answer 200 with `body`.
pub fn wait_for_body(url: &str, body: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if get(url).is_some_and(|(status, got)| status == 200 && got.trim() == body.trim()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A connection to `addr` (`IP:PORT`), given up after 2 s: a retired
/// container's address may take minutes to be refused.
pub fn connect(addr: &str) -> Option<TcpStream> {
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr).ok()?.next()?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()
}
