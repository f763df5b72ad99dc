//! Plain HTTP/1.0 GETs, enough to ask a deployed app what it serves; and
//! for the router's tests, HTTP/1.1 on one kept-alive connection
//! ([`KeepAlive`]), whole long downloads ([`download`]) and WebSockets
//! ([`WsClient`]). Every read waits 5 s at most.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// GETs `url` (`http://HOST:PORT/PATH`); answers the status and body.
pub fn get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = connect(authority)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    // CGI answers (busybox httpd passes them through) may end headers with bare newlines.
    let (head, body) = response.split_once("\r\n\r\n").or_else(|| response.split_once("\n\n"))?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Sends `request`, a whole request head, to `addr` (`HOST:PORT`); answers
/// the status, the response head and the body, waiting 15 s at most (a
/// router's 504 takes its upstream timeout).
pub fn raw(addr: &str, request: &str) -> Option<(u16, String, String)> {
    let mut stream = connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
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

/// One HTTP/1.1 connection to `addr` that requests go over one after the
/// other, as host `host`.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    host: String,
}

impl KeepAlive {
    pub fn connect(addr: &str, host: &str) -> Option<KeepAlive> {
        let reader = BufReader::new(connect(addr)?);
        Some(KeepAlive { reader, host: host.to_owned() })
    }

    /// GETs `path` on this connection; answers the status and body. None if
    /// the connection is gone, or closes before the whole body came.
    pub fn get(&mut self, path: &str) -> Option<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.reader.get_mut().write_all(request.as_bytes()).ok()?;
        let head = read_head(&mut self.reader)?;
        let mut body = Vec::new();
        read_body(&mut self.reader, &head, &mut body)?;
        Some((head.status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// GETs `path` from `addr` as host `host` (HTTP/1.1) and reads the whole
/// body, however long and slow, without keeping it; answers the status and
/// the body's length. None if the connection closes before the whole body
/// (by Content-Length or chunks) came.
pub fn download(addr: &str, host: &str, path: &str) -> Option<(u16, usize)> {
    let mut stream = connect(addr)?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let length = read_body(&mut reader, &head, &mut std::io::sink())?;
    Some((head.status, usize::try_from(length).ok()?))
}

/// A WebSocket client, over a plain TCP connection to a router.
pub struct WsClient {
    socket: WebSocket<TcpStream>,
}

impl WsClient {
    /// Opens `ws://HOST/PATH` at `addr`: the handshake sends `Host: host`.
    pub fn connect(addr: &str, host: &str, path: &str) -> Option<WsClient> {
        let request = format!("ws://{host}{path}").into_client_request().ok()?;
        let (socket, _response) = tungstenite::client::client(request, connect(addr)?).ok()?;
        Some(WsClient { socket })
    }

    /// Sends `text`; answers the next text message that comes back.
    pub fn send_text(&mut self, text: &str) -> Option<String> {
        self.socket.send(Message::text(text)).ok()?;
        loop {
            match self.socket.read().ok()? {
                Message::Text(reply) => return Some(reply.as_str().to_owned()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Closes the WebSocket and waits for the other side's close.
    pub fn close(mut self) {
        if self.socket.close(None).is_ok() {
            while self.socket.read().is_ok() {}
        }
    }
}

/// A response's status and how its body is framed.
struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
}

fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut head = Head { status, length: None, chunked: false };
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let Some((name, value)) = line.trim_end().split_once(':') else { return Some(head) };
        if name.eq_ignore_ascii_case("content-length") {
            head.length = Some(value.trim().parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
}

/// Copies the body `head` frames from `reader` to `out`; answers its length,
/// or None if the connection ends first.
fn read_body(reader: &mut impl BufRead, head: &Head, out: &mut impl Write) -> Option<u64> {
    if !head.chunked {
        return match head.length {
            Some(length) => copy_exactly(reader, length, out),
            None => std::io::copy(reader, out).ok(),
        };
    }
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let size = line.trim_end().split(';').next()?;
        let size = u64::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, if any, then the empty line.
            loop {
                line.clear();
                match reader.read_line(&mut line).ok()? {
                    0 => return None,
                    _ if line.trim_end().is_empty() => return Some(total),
                    _ => {}
                }
            }
        }
        total += copy_exactly(reader, size, out)?;
        line.clear();
        reader.read_line(&mut line).ok()?;
    }
}

fn copy_exactly(reader: &mut impl BufRead, length: u64, out: &mut impl Write) -> Option<u64> {
    let copied = std::io::copy(&mut reader.take(length), out).ok()?;
    (copied == length).then_some(copied)
}

/// A connection to `addr` (`IP:PORT`), given up after 2 s (a retired
/// container's address may take minutes to be refused), whose reads wait
/// 5 s at most.
pub fn connect(addr: &str) -> Option<TcpStream> {
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr).ok()?.next()?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(stream)
}
