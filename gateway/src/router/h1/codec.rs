//! HTTP/1.1 as the router reads and writes it: request and response heads
//! (parsed by `httparse`, never copied into maps), and how a message's body
//! ends ([`Framing`]), which the router follows byte by byte as it relays
//! the body unchanged.
//!
//! The rules against request smuggling are RFC 9112's: a request with both
//! `Transfer-Encoding` and `Content-Length`, with differing lengths, or
//! with a transfer coding other than `chunked` is refused, so the router
//! and the app can never disagree on where a request ends.

use std::fmt;
use std::mem::MaybeUninit;

use crate::router::route::HOP_BY_HOP;

/// The most headers a request or a response may have.
pub const MAX_HEADER_COUNT: usize = 100;

/// Why a head cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request is not valid HTTP/1.1")]
    Malformed,
    #[error("the request has too many headers")]
    TooManyHeaders,
    #[error("the request's length is ambiguous (Content-Length and Transfer-Encoding)")]
    AmbiguousLength,
    #[error("the request's Content-Length is not valid")]
    BadLength,
    #[error("the request's Transfer-Encoding is not chunked")]
    UnsupportedCoding,
}

/// Why a chunked body cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a chunked body is malformed")]
pub struct ChunkError;

/// How a message's body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes follow (0: no body).
    Length(u64),
    /// Chunks, up to the last one and its trailers.
    Chunked(Chunked),
    /// Everything until the sender closes (responses only).
    UntilClose,
}

impl Framing {
    /// Whether the body has been relayed whole.
    pub fn is_done(&self) -> bool {
        match self {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(chunked) => chunked.is_done(),
            Framing::UntilClose => false,
        }
    }

    /// How many of `bytes` (the next bytes of the body) belong to it.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        match self {
            Framing::Length(left) => {
                let taken = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                *left -= taken as u64;
                Ok(taken)
            }
            Framing::Chunked(chunked) => chunked.advance(bytes),
            Framing::UntilClose => Ok(bytes.len()),
        }
    }
}

/// Where a chunked body is: the state of RFC 9112's chunked grammar,
/// advanced over the bytes as they pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of chunk-size lines, extensions and trailers so far: capped,
    /// so that a body of nothing but extensions cannot go on forever.
    overhead: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk's size (hex), `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: an extension, up to its CR.
    Extension {
        size: u64,
    },
    /// The LF of the size line.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk's data.
    Data {
        left: u64,
    },
    /// The CR and the LF after a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    LineStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The final LF.
    EndLf,
    Done,
}

/// The most chunk-size lines, extensions and trailers a body may carry.
const MAX_CHUNK_OVERHEAD: usize = 64 * 1024;

impl Default for Chunked {
    fn default() -> Self {
        Chunked { state: ChunkState::Size { size: 0, digits: 0 }, overhead: 0 }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Follows `bytes`; how many of them belong to the body (all, or up to
    /// the end of the last chunk's trailers).
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        self.advance_with(bytes, |_| {})
    }

    /// As [`Self::advance`], and hands each run of chunk data (what the
    /// body says, without its framing) to `data`.
    pub fn advance_with(&mut self, bytes: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < bytes.len() {
            if let ChunkState::Data { left } = self.state {
                let taken = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - at);
                data(&bytes[at..at + taken]);
                at += taken;
                let left = left - taken as u64;
                self.state = if left == 0 { ChunkState::DataCr } else { ChunkState::Data { left } };
                continue;
            }
            if self.state == ChunkState::Done {
                return Ok(at);
            }
            self.overhead += 1;
            if self.overhead > MAX_CHUNK_OVERHEAD {
                return Err(ChunkError);
            }
            self.state = self.step(bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    fn step(&self, byte: u8) -> Result<ChunkState, ChunkError> {
        use ChunkState::{DataCr, DataLf, Done, EndLf, Extension, LineStart, Size, SizeLf, Trailer, TrailerLf};
        Ok(match (self.state, byte) {
            (Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return Err(ChunkError);
                }
                let digit = u64::from(char::from(byte).to_digit(16).ok_or(ChunkError)?);
                Size { size: size << 4 | digit, digits: digits + 1 }
            }
            (Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => Extension { size },
            (Size { size, digits }, b'\r') if digits > 0 => SizeLf { size },
            (Extension { size }, b'\r') => SizeLf { size },
            (Extension { size }, byte) if byte != b'\n' => Extension { size },
            (SizeLf { size: 0 } | TrailerLf, b'\n') => LineStart,
            (SizeLf { size }, b'\n') => ChunkState::Data { left: size },
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { size: 0, digits: 0 },
            (LineStart, b'\r') => EndLf,
            (LineStart | Trailer, b'\n') => return Err(ChunkError),
            (Trailer, b'\r') => TrailerLf,
            (LineStart | Trailer, _) => Trailer,
            (EndLf, b'\n') => Done,
            _ => return Err(ChunkError),
        })
    }
}

/// A request head, as parsed: positions in the connection's buffer, so
/// that nothing is copied until it is written to the app.
pub struct RequestHead<'b> {
    /// How many bytes the head takes, up to and with its empty line.
    pub len: usize,
    pub method: &'b str,
    pub target: &'b str,
    /// HTTP/1.0 (0) or HTTP/1.1 (1).
    pub minor: u8,
    pub headers: &'b [httparse::Header<'b>],
    pub framing: Framing,
    /// `Host`, when there is exactly one.
    pub host: Option<&'b str>,
    /// More than one `Host` header.
    pub hosts: bool,
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    pub close: bool,
    /// `Connection: upgrade`, with the protocol of `Upgrade`.
    pub upgrade: Option<&'b [u8]>,
    /// `Expect: 100-continue`.
    pub expects_continue: bool,
}

/// Room for a head's headers, left uninitialised: the parser writes what
/// it finds, and a request costs no clearing of the whole array.
pub type Storage<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADER_COUNT];

pub fn storage<'b>() -> Storage<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADER_COUNT]
}

/// A request's head, when `buf` holds a whole one; `Ok(None)` while it does not.
pub fn parse_request<'b>(buf: &'b [u8], storage: &'b mut Storage<'b>) -> Result<Option<RequestHead<'b>>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    let headers: &'b [httparse::Header<'b>] = req.headers;
    let mut head = RequestHead {
        len,
        method,
        target,
        minor,
        headers,
        framing: Framing::Length(0),
        host: None,
        hosts: false,
        close: minor == 0,
        upgrade: None,
        expects_continue: false,
    };
    let (mut length, mut chunked, mut connection_upgrade, mut upgrade) = (None, false, false, None);
    let mut host_seen = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            // Counted whatever its bytes: a first `Host` that is not UTF-8
            // must not hide a second one.
            head.hosts |= host_seen;
            host_seen = true;
            head.host = std::str::from_utf8(header.value).ok();
        } else if name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value).ok_or(HeadError::BadLength)?;
            if length.is_some_and(|before| before != value) {
                return Err(HeadError::BadLength);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || minor == 0 || !header.value.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::UnsupportedCoding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.close = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(header.value);
        } else if name.eq_ignore_ascii_case("expect") {
            head.expects_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    head.framing = match (length, chunked) {
        (Some(_), true) => return Err(HeadError::AmbiguousLength),
        (_, true) => Framing::Chunked(Chunked::default()),
        (length, false) => Framing::Length(length.unwrap_or(0)),
    };
    if connection_upgrade && minor == 1 {
        head.upgrade = upgrade.filter(|protocol| !protocol.is_empty());
    }
    Ok(Some(head))
}

/// A response head from an app.
pub struct ResponseHead<'b> {
    pub len: usize,
    pub code: u16,
    pub reason: &'b str,
    pub headers: &'b [httparse::Header<'b>],
    /// `Content-Length`, when there is one valid one.
    pub length: Option<u64>,
    pub chunked: bool,
    /// A `Transfer-Encoding` other than chunked: the body ends with the connection.
    pub coded: bool,
    /// The app closes the connection after this answer.
    pub close: bool,
}

/// Where the head at the start of `buf` ends (after its empty line), if
/// `buf` holds all of it: found without parsing it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|at| match buf.get(at + 1..at + 3) {
        Some([b'\n', _]) => Some(at + 2),
        Some([b'\r', b'\n']) => Some(at + 3),
        _ if buf.get(at + 1) == Some(&b'\n') => Some(at + 2),
        _ => None,
    })
}

/// An answer's head, when `buf` holds a whole one; `Ok(None)` while it does not.
pub fn parse_response<'b>(buf: &'b [u8], storage: &'b mut Storage<'b>) -> Result<Option<ResponseHead<'b>>, HeadError> {
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(code), Some(minor)) = (res.code, res.version) else { return Err(HeadError::Malformed) };
    let headers: &'b [httparse::Header<'b>] = res.headers;
    let reason = res.reason.unwrap_or("");
    let mut head =
        ResponseHead { len, code, reason, headers, length: None, chunked: false, coded: false, close: minor == 0 };
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value).ok_or(HeadError::BadLength)?;
            if head.length.is_some_and(|before| before != value) {
                return Err(HeadError::BadLength);
            }
            head.length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = tokens(header.value).last().is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
            head.coded = !head.chunked;
            head.close |= head.coded;
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in tokens(header.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    head.close = false;
                }
            }
        }
    }
    Ok(Some(head))
}

impl ResponseHead<'_> {
    /// How the body of this answer to a request with `method` ends.
    pub fn framing(&self, method: &str) -> Framing {
        if method == "HEAD" || matches!(self.code, 100..=199 | 204 | 304) {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked(Chunked::default())
        } else if self.coded {
            Framing::UntilClose
        } else if let Some(length) = self.length {
            Framing::Length(length)
        } else {
            Framing::UntilClose
        }
    }
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The comma-separated tokens of a header's value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

/// Headers that belong to one connection, never forwarded either way: the
/// router's list, and `Proxy-Connection`. (Not `Transfer-Encoding`: the
/// router relays chunked bodies as they are, so it keeps the header that
/// says they are chunked.)
pub fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("proxy-connection") || HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
}

/// A head being written: `Name: value` lines, in a buffer.
pub struct HeadWriter<'o>(pub &'o mut Vec<u8>);

impl HeadWriter<'_> {
    pub fn header(&mut self, name: &str, value: &[u8]) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    pub fn number(&mut self, name: &str, value: impl fmt::Display) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(self.0, "{name}: {value}\r\n");
    }

    pub fn end(self) {
        self.0.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::{Chunked, Framing, HeadError, parse_request, parse_response};

    type Summary = (usize, Framing, bool, Option<String>);

    fn request(text: &str) -> Result<Option<Summary>, HeadError> {
        let mut storage = super::storage();
        let head = parse_request(text.as_bytes(), &mut storage)?;
        Ok(head.map(|h| (h.len, h.framing, h.close, h.upgrade.map(|u| String::from_utf8_lossy(u).into_owned()))))
    }

    #[test]
    fn requests_say_where_they_end() {
        let get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(request(get), Ok(Some((get.len(), Framing::Length(0), false, None))));
        assert_eq!(request("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(request(post), Ok(Some((post.len() - 5, Framing::Length(5), false, None))));
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(request(chunked), Ok(Some((_, Framing::Chunked(_), _, _)))));
        assert!(matches!(request("GET / HTTP/1.0\r\n\r\n"), Ok(Some((_, _, true, _)))));
        assert!(matches!(request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), Ok(Some((_, _, false, _)))));
        let ws = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(request(ws), Ok(Some((_, _, false, Some(p)))) if p == "websocket"));
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(request(both), Err(HeadError::AmbiguousLength));
        let two = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(request(two), Err(HeadError::BadLength));
        assert_eq!(request("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), Err(HeadError::BadLength));
        let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(request(gzip), Err(HeadError::UnsupportedCoding));
        assert_eq!(request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(HeadError::UnsupportedCoding));
        assert_eq!(request("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), Err(HeadError::Malformed));
        let mut storage = super::storage();
        let hosts = b"GET / HTTP/1.1\r\nHost: a\xff\r\nHost: b\r\n\r\n";
        let head = parse_request(hosts, &mut storage).expect("parsed").expect("whole");
        assert!(head.hosts, "a Host that is not UTF-8 still counts as one (found by fuzz/http1_codec)");
        let many = "X-A: y\r\n".repeat(101);
        assert_eq!(request(&format!("GET / HTTP/1.1\r\n{many}\r\n")), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn chunked_bodies_end_after_the_last_chunk_and_its_trailers() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        // Whole, and a byte at a time.
        let mut whole = Chunked::default();
        assert_eq!(whole.advance(body), Ok(body.len() - 4));
        assert!(whole.is_done());
        let mut bytewise = Chunked::default();
        let taken: usize = body.iter().map(|b| bytewise.advance(std::slice::from_ref(b)).expect("valid")).sum();
        assert_eq!(taken, body.len() - 4);
        let mut data = Vec::new();
        Chunked::default().advance_with(body, |run| data.extend_from_slice(run)).expect("valid");
        assert_eq!(data, b"hello0123456789abcdef");
        let mut plain = Chunked::default();
        assert_eq!(plain.advance(b"0\r\n\r\n"), Ok(5));
        assert!(plain.is_done());
        for bad in [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"fffffffffffffffff\r\n", b"0\r\n\n"] {
            assert!(Chunked::default().advance(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_head_ends_at_its_empty_line() {
        assert_eq!(super::head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(super::head_end(b"HTTP/1.1 200 OK\nA: b\n\nbody"), Some(22));
        assert_eq!(super::head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(super::head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r"), None);
    }

    #[test]
    fn responses_say_where_they_end() {
        let mut storage = super::storage();
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let head = parse_response(text, &mut storage).expect("valid").expect("whole");
        assert_eq!(
            (head.code, head.framing("GET"), head.framing("HEAD")),
            (200, Framing::Length(5), Framing::Length(0))
        );
        let mut storage = super::storage();
        let head = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", &mut storage).expect("valid").expect("whole");
        assert_eq!(head.framing("GET"), Framing::UntilClose);
        let mut storage = super::storage();
        let text = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n";
        let head = parse_response(text, &mut storage).expect("valid").expect("whole");
        assert_eq!(head.framing("GET"), Framing::Length(0));
    }
}
