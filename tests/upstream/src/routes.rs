//! The routes: one function each, and the query parsing they share.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::ws;

pub type Body = BoxBody<Bytes, Infallible>;

/// The largest `chunk` of `/download`: one buffer of it is all it holds.
const MAX_CHUNK: usize = 16 << 20;

/// `/hangup`: the connection is closed with no answer at all, as a
/// crashing app's would be (a router answers 502).
#[derive(Debug)]
pub struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hung up on purpose")
    }
}

impl std::error::Error for Hangup {}

pub async fn handle(request: Request<Incoming>, reply: Arc<str>) -> Result<Response<Body>, Hangup> {
    if request.method() == Method::POST && request.uri().path() == "/echo" {
        return Ok(echo(request).await);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    }
    let query = request.uri().query().unwrap_or("");
    let response = match request.uri().path() {
        "/" => text(StatusCode::OK, format!("{reply}\n")),
        "/download" => download(query),
        "/chunked" => chunked(query),
        "/sleep" => sleep(query).await,
        "/burn" => burn(query),
        "/headers" => headers(&request),
        "/ws" => ws::upgrade(request, reply),
        "/hangup" => return Err(Hangup),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// `/download?bytes=N&chunk=C&delay_ms=D`: N bytes of `x` with a
/// Content-Length, C at a time (64 KiB by default), D ms apart (none by default).
fn download(query: &str) -> Response<Body> {
    let parsed = (|| {
        let bytes: u64 = param(query, "bytes")?.ok_or("bytes=N is missing")?;
        let chunk: usize = param(query, "chunk")?.unwrap_or(65536);
        let delay: u64 = param(query, "delay_ms")?.unwrap_or(0);
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(format!("chunk must be 1 to {MAX_CHUNK}"));
        }
        Ok((bytes, chunk, Duration::from_millis(delay)))
    })();
    let (total, chunk, delay) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let buffer = Bytes::from(vec![b'x'; chunk]);
    let chunks = futures_util::stream::unfold((total, true), move |(left, first)| {
        let buffer = buffer.clone();
        async move {
            if left == 0 {
                return None;
            }
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let size = usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
            Some((Ok(Frame::data(buffer.slice(..size))), (left - size as u64, false)))
        }
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(total));
    response
}

/// `POST /echo`: the request's body, whole (at most 16 MiB), with its length.
async fn echo(request: Request<Incoming>) -> Response<Body> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_CHUNK);
    match limited.collect().await {
        Ok(body) => text(StatusCode::OK, body.to_bytes()),
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// `/chunked?n=N`: `part 1\n` to `part N\n`, as N chunks, with no
/// Content-Length (so HTTP/1.1 sends them chunked).
fn chunked(query: &str) -> Response<Body> {
    let count: u32 = match param(query, "n") {
        Ok(count) => count.unwrap_or(3),
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    };
    let parts = futures_util::stream::iter(
        (1..=count).map(|n| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("part {n}\n"))))),
    );
    let mut response = Response::new(StreamBody::new(parts).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// `/sleep?ms=N`: `slept N`, N ms later.
async fn sleep(query: &str) -> Response<Body> {
    match param::<u64>(query, "ms") {
        Ok(Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms}\n"))
        }
        Ok(None) => text(StatusCode::BAD_REQUEST, "ms=N is missing\n"),
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// `/burn?ms=N`: keeps a CPU busy for N ms (at most a second), then
/// answers `burned N`: a CPU-bound request.
fn burn(query: &str) -> Response<Body> {
    match param::<u64>(query, "ms") {
        Ok(Some(ms)) if ms <= 1000 => {
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            let mut spins: u64 = 0;
            while std::time::Instant::now() < until {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
            text(StatusCode::OK, format!("burned {ms}\n"))
        }
        Ok(Some(_)) => text(StatusCode::BAD_REQUEST, "ms must be at most 1000\n"),
        Ok(None) => text(StatusCode::BAD_REQUEST, "ms=N is missing\n"),
        Err(error) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// `/headers`: the request's headers, `name: value` a line, as they came.
fn headers(request: &Request<Incoming>) -> Response<Body> {
    let mut body = String::new();
    for (name, value) in request.headers() {
        // Writing to a String cannot fail.
        let _ = writeln!(body, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    text(StatusCode::OK, body)
}

/// The value of `name` in `query`, if there; an error if it does not parse.
/// Values are plain numbers here, so no percent-decoding.
fn param<T: FromStr>(query: &str, name: &str) -> Result<Option<T>, String> {
    let Some(value) = query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')) else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| format!("{name}={value:?} is not a valid number"))
}
