//! HTTP/1.1 clients (plain, and over TLS without HTTP/2), served by the
//! router's own code rather than hyper's: each client connection is one
//! task that reads a request head, writes it to a pooled connection to the
//! instance with the `X-Forwarded-*` headers, relays the body as it comes,
//! then reads the answer's head and relays it back the same way. Bodies
//! are never parsed beyond where they end ([`codec::Framing`]), and never
//! buffered whole. This is what nginx does, and what lets the router keep
//! up with it: hyper's server and client, with a task and a channel per
//! upstream connection and header maps both ways, cost about twice the
//! CPU per request (`docs/benchmarks.md`). HTTP/2 clients still go through
//! hyper ([`super::h2`]); both ask [`Routing::route`] where a request goes.

pub mod codec;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use self::codec::{Framing, HeadWriter, RequestHead, ResponseHead};
use super::connections::Registration;
use super::pool::Pool;
use super::presence::InflightGuard;
use super::route::{
    CLIENT_SAID_FORWARDED, Decision, Exchange, PAGE_TYPE, Peer, Refusal, Routing, acme_token, host_of, page_text,
    request_id, spells_a_forwarding_header,
};
use super::tunnel;

/// How long a client gets to send a request's head (against slow-loris),
/// and how long an idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's head may take; a larger one gets 431 (read whole
/// up to twice this, so that the client, still writing, reads the answer).
const MAX_HEAD: usize = 32 * 1024;
/// How long a connection closed after an error reads what the client
/// still sends, so that the client reads the answer before the close.
const LINGER: Duration = Duration::from_secs(2);
/// How much a connection reads at a time.
const CHUNK: usize = 16 * 1024;

/// What a connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Close, after the client's unread input (a refused request's).
    Linger,
}

impl Next {
    /// What a connection does after the router answered a request itself:
    /// a request whose body is left unread must not leave it for the next.
    fn after_answer(body: &Framing, close: bool) -> Next {
        if !body.is_done() {
            Next::Linger
        } else if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}

/// Serves one HTTP/1.1 client connection until it ends; when the router
/// stops (`signal`), the request in flight finishes first. While it waits
/// on its client, it says so (`signal`), and may be told to close at once
/// to make room.
pub async fn serve<C>(client: C, routing: &Routing, pool: &Pool, peer: &Peer, signal: Registration)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        client,
        routing,
        pool,
        peer,
        buf: BytesMut::with_capacity(4096),
        ubuf: BytesMut::new(),
        timer: Timer::new(),
        signal,
        held: None,
    };
    let mut out = Vec::with_capacity(1024);
    let mut next = Next::KeepAlive;
    while next == Next::KeepAlive {
        out.clear();
        next = conn.next(&mut out).await;
    }
    if let Some((upstream, stream)) = conn.held.take() {
        pool.put_back(upstream, stream);
    }
    let _ = conn.client.shutdown().await;
    if next == Next::Linger {
        // Unread input at the close would reset the connection, and the
        // client could lose the answer: read it away first (as nginx's
        // `lingering_close`).
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while let Ok(Ok(1..)) = tokio::time::timeout_at(deadline, conn.client.read(&mut sink)).await {}
    }
}

struct Conn<'p, C> {
    client: C,
    routing: &'p Routing,
    /// Connections to the instances, kept between requests.
    pool: &'p Pool,
    peer: &'p Peer,
    /// What the client sent that is not handled yet.
    buf: BytesMut,
    /// What the app sent that is not relayed yet.
    ubuf: BytesMut,
    timer: Timer,
    /// Set when the router stops, or when this connection must make room.
    signal: Registration,
    /// The connection to an instance the last request used, for the next.
    held: Option<(SocketAddr, TcpStream)>,
}

/// A request the router forwards, once its head is read.
#[expect(clippy::struct_excessive_bools, reason = "independent facts of one request, each read once")]
struct Forward {
    upstream: SocketAddr,
    guard: InflightGuard,
    host: String,
    /// The request's body, still to relay.
    framing: Framing,
    /// The client closes after this request.
    close: bool,
    /// The client asked for `Connection: upgrade` (a WebSocket).
    upgrade: bool,
    head_request: bool,
    /// An HTTP/1.0 client, which cannot read chunks.
    old_client: bool,
    expects_continue: bool,
    /// Safe to send again elsewhere when it failed before any answer: a
    /// bodiless GET, HEAD or OPTIONS.
    again: bool,
}

/// A request's head, read.
#[expect(clippy::large_enum_variant, reason = "made once per request and moved once, never kept")]
enum Step {
    /// What becomes of it, and its access-log line.
    Planned(Plan, Exchange),
    /// It asks for an ACME challenge at this path: the store has the answer, or not.
    Challenge(String),
}

/// An ACME challenge's answer, for a request at its path.
enum Challenge {
    /// Not looked up (yet).
    Unasked,
    /// What the store has.
    Asked(Option<Vec<u8>>),
}

/// A request refused before it could be read whole.
struct Refused(StatusCode, String);

/// What becomes of a request, once its head is read.
enum Plan {
    /// Forward it (the head for the app is written).
    Forward(Forward),
    /// Answer it with what is written, then keep the connection or close it.
    Answer(Next),
}

impl<C> Conn<'_, C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads and handles one request.
    async fn next(&mut self, out: &mut Vec<u8>) -> Next {
        let deadline = Instant::now() + HEADER_READ_TIMEOUT;
        // An ACME challenge's answer, once looked up in the store.
        let mut challenge = Challenge::Unasked;
        let (len, plan, mut exchange) = loop {
            if !self.buf.is_empty() {
                // Parsed in a block with no wait in it: the headers' room
                // is never part of the connection's state.
                let parsed = {
                    let mut storage = codec::storage();
                    match codec::parse_request(&self.buf, &mut storage) {
                        Ok(Some(head)) => Some((
                            head.len,
                            Ok(self.plan(&head, out, std::mem::replace(&mut challenge, Challenge::Unasked))),
                        )),
                        Ok(None) if self.buf.len() > 2 * MAX_HEAD => Some((
                            0,
                            Err(Refused(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "the request's headers are too large".into(),
                            )),
                        )),
                        Ok(None) => None,
                        Err(err) => {
                            let status = match err {
                                codec::HeadError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                codec::HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
                                _ => StatusCode::BAD_REQUEST,
                            };
                            Some((0, Err(Refused(status, err.to_string()))))
                        }
                    }
                };
                match parsed {
                    Some((len, Ok(Step::Planned(plan, exchange)))) => break (len, plan, exchange),
                    Some((_, Ok(Step::Challenge(path)))) => {
                        // Looked up, then the head is read again, with the answer.
                        challenge = Challenge::Asked(self.routing.acme_challenge(&path).await);
                        continue;
                    }
                    Some((_, Err(Refused(status, why)))) => return self.refuse(out, status, &why).await,
                    None => {}
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let idle = self.buf.is_empty();
            self.signal.waiting(idle);
            let read = self.timer.within(deadline, async {
                tokio::select! {
                    read = self.client.read_buf(&mut self.buf) => Some(read),
                    () = self.signal.closing(idle) => None,
                }
            });
            let read = match read.await {
                Ok(Some(read)) => Ok(read),
                Ok(None) => return Next::Close,
                Err(Elapsed) => Err(Elapsed),
            };
            match read {
                Ok(Ok(0) | Err(_)) => return Next::Close,
                Ok(Ok(_)) => {}
                Err(_) if idle => return Next::Close,
                Err(_) => {
                    warn!(peer = %self.peer.addr, "router: closed a connection that sent no complete request head within 10 s");
                    return Next::Close;
                }
            }
        };
        if !self.signal.busy() {
            // Told to make room just as the request came.
            return Next::Close;
        }
        self.buf.advance(len);
        let next = match plan {
            Plan::Answer(next) => {
                if self.write(out).await.is_err() {
                    return Next::Close;
                }
                next
            }
            Plan::Forward(forward) => self.forward(forward, out, &mut exchange).await,
        };
        drop(exchange);
        if self.signal.is_stopped() { Next::Close } else { next }
    }

    /// Decides what becomes of a request from its head, and writes what
    /// goes out next to `out`: the head for the app, or the router's answer.
    /// An ACME challenge is looked up in the store first ([`Step::Challenge`]):
    /// `challenge` is what the store had.
    fn plan(&self, head: &RequestHead<'_>, out: &mut Vec<u8>, challenge: Challenge) -> Step {
        let find = |name: &str| head.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let (origin, absolute_host) = split_target(head.target);
        if let Some(path) = origin.filter(|path| matches!(challenge, Challenge::Unasked) && acme_token(path).is_some())
        {
            return Step::Challenge(path.to_owned());
        }
        let method = Method::from_bytes(head.method.as_bytes()).unwrap_or_default();
        let id = request_id(find("x-request-id"));
        let mut exchange = Exchange::new(method, origin.unwrap_or(head.target), id, self.routing.observers.clone());
        let old_client = head.minor == 0;
        let answered = Next::after_answer(&head.framing, head.close);
        let refused = |status: StatusCode, why: &str, mut exchange: Exchange, out: &mut Vec<u8>| {
            page(out, status, why, &mut exchange, old_client, answered);
            Step::Planned(Plan::Answer(answered), exchange)
        };
        if head.len > MAX_HEAD {
            return refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request's headers are too large",
                exchange,
                out,
            );
        }
        let Some(origin) = origin else {
            return refused(StatusCode::BAD_REQUEST, "the request's path is not valid", exchange, out);
        };
        // An absolute target's host names the host, whatever `Host` says (RFC 9112 3.2.2).
        let host = if head.hosts { None } else { host_of(absolute_host.or(head.host)) };
        let Some(host) = host else {
            return refused(StatusCode::BAD_REQUEST, "the request has no valid Host header", exchange, out);
        };
        exchange.host = Some(host.clone());
        if let Challenge::Asked(Some(answer)) = challenge {
            exchange.bytes = answer.len() as u64;
            status_line(out, 200, "OK");
            let mut head = HeadWriter(out);
            head.header("content-type", b"application/octet-stream");
            head.number("content-length", answer.len());
            connection(&mut head, old_client, answered);
            head.end();
            out.extend_from_slice(&answer);
            return Step::Planned(Plan::Answer(answered), exchange);
        }
        let (upstream, guard) = match self.routing.route(&host, origin, self.peer, &mut exchange) {
            Ok(Decision::Forward(upstream, guard)) => (upstream, guard),
            Ok(Decision::Redirect(location)) => {
                exchange.status = StatusCode::PERMANENT_REDIRECT;
                status_line(out, StatusCode::PERMANENT_REDIRECT.as_u16(), "Permanent Redirect");
                let mut head = HeadWriter(out);
                head.header("location", location.as_bytes());
                head.header("content-length", b"0");
                connection(&mut head, old_client, answered);
                head.end();
                return Step::Planned(Plan::Answer(answered), exchange);
            }
            Err(Refusal(status, why)) => return refused(status, &why, exchange, out),
        };
        self.write_request_head(head, origin, &host, absolute_host.is_some(), &exchange.id, out);
        let again =
            matches!(head.method, "GET" | "HEAD" | "OPTIONS") && head.framing.is_done() && head.upgrade.is_none();
        let forward = Forward {
            upstream,
            guard,
            host,
            framing: head.framing.clone(),
            close: head.close,
            upgrade: head.upgrade.is_some(),
            head_request: head.method == "HEAD",
            old_client,
            expects_continue: head.expects_continue && head.minor == 1,
            again,
        };
        Step::Planned(Plan::Forward(forward), exchange)
    }

    /// The head the app gets: the client's, less the hop-by-hop headers,
    /// with what the app should know of the client: `X-Forwarded-For/
    /// -Proto/-Host/-Port` and `X-Request-Id`. The app is asked in
    /// HTTP/1.1, whatever the client spoke, in origin form: the host of an
    /// absolute target (`absolute`) becomes the `Host` it gets.
    fn write_request_head(
        &self,
        head: &RequestHead<'_>,
        origin: &str,
        host: &str,
        absolute: bool,
        id: &HeaderValue,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(head.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut forwarded_for: Option<Vec<u8>> = None;
        let mut writer = HeadWriter(out);
        let trusted = self.peer.trusted;
        for header in head.headers {
            let name = header.name;
            if !trusted && CLIENT_SAID_FORWARDED.iter().any(|said| name.eq_ignore_ascii_case(said))
                || spells_a_forwarding_header(name)
            {
                continue;
            }
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                if !trusted {
                    continue;
                }
                let chain = forwarded_for.get_or_insert_with(Vec::new);
                if !chain.is_empty() {
                    chain.extend_from_slice(b", ");
                }
                chain.extend_from_slice(header.value);
            } else if !(codec::is_hop_by_hop(name)
                || absolute && name.eq_ignore_ascii_case("host")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("x-request-id")
                || name.eq_ignore_ascii_case("x-forwarded-proto")
                || name.eq_ignore_ascii_case("x-forwarded-host")
                || name.eq_ignore_ascii_case("x-forwarded-port"))
            {
                writer.header(name, header.value);
            }
        }
        if let Some(protocol) = head.upgrade {
            writer.header("connection", b"upgrade");
            writer.header("upgrade", protocol);
        }
        if absolute || head.host.is_none() {
            writer.header("host", host.as_bytes());
        }
        let ip = self.peer.ip.as_bytes();
        match forwarded_for {
            Some(mut chain) => {
                chain.extend_from_slice(b", ");
                chain.extend_from_slice(ip);
                writer.header("x-forwarded-for", &chain);
            }
            None => writer.header("x-forwarded-for", ip),
        }
        writer.header("x-forwarded-proto", if self.peer.secure { b"https" } else { b"http" });
        writer.header("x-forwarded-host", host.as_bytes());
        writer.header("x-forwarded-port", self.routing.forwarded_port(self.peer.secure).as_bytes());
        writer.header("x-request-id", id.as_bytes());
        writer.end();
    }

    /// Answers a request whose head cannot be read with a page, and closes.
    async fn refuse(&mut self, out: &mut Vec<u8>, status: StatusCode, why: &str) -> Next {
        let mut exchange = Exchange::new(Method::GET, "-", request_id(None), self.routing.observers.clone());
        page(out, status, why, &mut exchange, false, Next::Close);
        let _ = self.write(out).await;
        Next::Linger
    }

    /// Writes to the client, which must take it within `body_timeout`.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + self.routing.listeners().body_timeout;
        let written = self.timer.within(deadline, async {
            self.client.write_all(bytes).await?;
            self.client.flush().await
        });
        written.await.unwrap_or_else(|Elapsed| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Forwards a request whose head is in `out` to its instance, and
    /// relays the answer.
    async fn forward(&mut self, mut forward: Forward, out: &mut Vec<u8>, exchange: &mut Exchange) -> Next {
        let app = exchange.app.clone().unwrap_or_else(|| "-".into());
        if forward.expects_continue
            && !forward.framing.is_done()
            && self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return Next::Close;
        }
        let stream = loop {
            match self.send(&mut forward, out).await {
                Ok(stream) => break stream,
                Err(Failure::Client) => return Next::Close,
                Err(Failure::BodyTimeout) => {
                    let timeout = self.routing.listeners().body_timeout.as_secs();
                    let why = format!("the request's body did not arrive within {timeout}s");
                    return self.fail(out, StatusCode::REQUEST_TIMEOUT, &why, exchange, &forward).await;
                }
                Err(Failure::Refused(why)) if forward.again => {
                    // Sent once more, to another instance where there is one:
                    // a switch may have just retired the one picked, it may
                    // have just died, or a pooled connection closed as it
                    // was lent.
                    debug!(%app, upstream = %forward.upstream, error = %why, "upstream refused; trying once more");
                    forward.again = false;
                    match self.routing.pick(&forward.host, &app, Some(forward.upstream)) {
                        Ok((upstream, guard)) => {
                            (forward.upstream, forward.guard) = (upstream, guard);
                            exchange.upstream = Some(upstream);
                        }
                        Err(Refusal(status, why)) => return self.fail(out, status, &why, exchange, &forward).await,
                    }
                }
                Err(Failure::Refused(why)) => {
                    info!(%app, upstream = %forward.upstream, error = %why, "upstream refused");
                    self.routing.observers.metrics.upstream_error(&app);
                    let why = format!("{app} did not answer");
                    return self.fail(out, StatusCode::BAD_GATEWAY, &why, exchange, &forward).await;
                }
                Err(Failure::Timeout) => {
                    self.routing.observers.metrics.upstream_error(&app);
                    let why = format!("{app} took too long to answer");
                    return self.fail(out, StatusCode::GATEWAY_TIMEOUT, &why, exchange, &forward).await;
                }
            }
        };
        self.answer(stream, forward, out, exchange).await
    }

    /// Sends the request (its head in `out`, its body from the client) to
    /// its instance, and waits for the answer's head, which is left in `ubuf`.
    async fn send(&mut self, forward: &mut Forward, out: &[u8]) -> Result<TcpStream, Failure> {
        let held = self.held.take();
        let lent = self.pool.get(forward.upstream, held).await.map_err(|err| Failure::Refused(err.to_string()))?;
        let mut stream = lent.stream;
        let refused = |err: std::io::Error| Failure::Refused(err.to_string());
        // The head, with what of the body has come already.
        let early = forward.framing.advance(&self.buf).map_err(|_| Failure::Client)?;
        if early == 0 {
            stream.write_all(out).await.map_err(refused)?;
        } else {
            let mut first = Vec::with_capacity(out.len() + early);
            first.extend_from_slice(out);
            first.extend_from_slice(&self.buf[..early]);
            self.buf.advance(early);
            stream.write_all(&first).await.map_err(refused)?;
        }
        // The rest of the body, as it comes: each read within
        // `body_timeout`, and while it waits, the connection may be told to
        // make room.
        let body_timeout = self.routing.listeners().body_timeout;
        while !forward.framing.is_done() {
            if self.buf.is_empty() {
                self.buf.reserve(CHUNK);
                self.signal.waiting(false);
                let read = self.timer.within(Instant::now() + body_timeout, async {
                    tokio::select! {
                        read = self.client.read_buf(&mut self.buf) => Some(read),
                        () = self.signal.closing(false) => None,
                    }
                });
                let read = read.await;
                if !self.signal.busy() {
                    return Err(Failure::Client);
                }
                match read {
                    Ok(Some(Ok(0) | Err(_)) | None) => return Err(Failure::Client),
                    Ok(Some(Ok(_))) => {}
                    Err(Elapsed) => return Err(Failure::BodyTimeout),
                }
            }
            let taken = forward.framing.advance(&self.buf).map_err(|_| Failure::Client)?;
            stream.write_all(&self.buf[..taken]).await.map_err(refused)?;
            self.buf.advance(taken);
        }
        self.ubuf.clear();
        let timeout = self.routing.listeners().upstream_timeout;
        match self.timer.within(Instant::now() + timeout, read_head(&mut stream, &mut self.ubuf)).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(HeadRead::Closed)) if lent.pooled && self.ubuf.is_empty() => {
                Err(Failure::Refused("a pooled connection had closed".into()))
            }
            Ok(Err(why)) => Err(Failure::Refused(why.to_string())),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Relays the answer whose head is in `ubuf` to the client, and puts
    /// the connection back when it can carry another request.
    async fn answer(
        &mut self,
        mut stream: TcpStream,
        forward: Forward,
        out: &mut Vec<u8>,
        exchange: &mut Exchange,
    ) -> Next {
        let method = if forward.head_request { "HEAD" } else { "GET" };
        let (code, mut framing, upstream_closes, next, dechunk) = loop {
            out.clear();
            // Parsed in a block with no wait in it (see `next`).
            let read = {
                let mut storage = codec::storage();
                match codec::parse_response(&self.ubuf, &mut storage) {
                    Ok(Some(head)) if (100..200).contains(&head.code) && head.code != 101 => {
                        // An interim answer (103 Early Hints, say): relayed as it is; the real one follows.
                        out.extend_from_slice(&self.ubuf[..head.len]);
                        Some(Err(head.len))
                    }
                    Ok(Some(head)) => {
                        let framing = head.framing(method);
                        let dechunk = forward.old_client && matches!(framing, Framing::Chunked(_));
                        let closes = forward.close || matches!(framing, Framing::UntilClose) || dechunk;
                        let next = if closes { Next::Close } else { Next::KeepAlive };
                        write_response_head(&head, forward.old_client, next, dechunk, out);
                        Some(Ok((head.len, head.code, framing, head.close, next, dechunk)))
                    }
                    Ok(None) | Err(_) => None,
                }
            };
            match read {
                Some(Ok((len, code, framing, closes, next, dechunk))) => {
                    self.ubuf.advance(len);
                    break (code, framing, closes, next, dechunk);
                }
                Some(Err(len)) => {
                    self.ubuf.advance(len);
                    let timeout = self.routing.listeners().upstream_timeout;
                    let read =
                        self.timer.within(Instant::now() + timeout, read_head(&mut stream, &mut self.ubuf)).await;
                    if self.write(out).await.is_err() || !matches!(read, Ok(Ok(()))) {
                        return Next::Close;
                    }
                }
                None => {
                    let app = exchange.app.clone().unwrap_or_else(|| "-".into());
                    info!(%app, upstream = %forward.upstream, "upstream answered with no valid HTTP/1.1 head");
                    self.routing.observers.metrics.upstream_error(&app);
                    let why = format!("{app} did not answer with HTTP");
                    return self.fail(out, StatusCode::BAD_GATEWAY, &why, exchange, &forward).await;
                }
            }
        };
        exchange.status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
        if code == 101 {
            let _in_flight = forward.guard;
            return if forward.upgrade { self.tunnel(&mut stream, out).await } else { Next::Close };
        }
        // The head goes with what of the body has come already, in one write.
        let relayed = loop {
            let mut data = 0;
            let taken = match &mut framing {
                Framing::Chunked(chunked) if dechunk => chunked.advance_with(&self.ubuf, |run| {
                    out.extend_from_slice(run);
                    data += run.len();
                }),
                framing => framing.advance(&self.ubuf).inspect(|&taken| {
                    out.extend_from_slice(&self.ubuf[..taken]);
                    data += taken;
                }),
            };
            let Ok(taken) = taken else { break false };
            exchange.bytes += data as u64;
            self.ubuf.advance(taken);
            if !out.is_empty() && self.write(out).await.is_err() {
                break false;
            }
            out.clear();
            if framing.is_done() {
                break true;
            }
            // Bytes past the body's end would be left in `ubuf`: there are none here.
            self.ubuf.clear();
            self.ubuf.reserve(CHUNK);
            match stream.read_buf(&mut self.ubuf).await {
                Ok(0) => break matches!(framing, Framing::UntilClose),
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        if !relayed {
            debug!(upstream = %forward.upstream, "router: an answer was cut short");
            return Next::Close;
        }
        // Only a connection whose answer ended where it said goes back.
        if self.ubuf.is_empty() && !upstream_closes && framing.is_done() {
            self.held = Some((forward.upstream, stream));
        }
        next
    }

    /// Copies both ways between the client and the app once both have
    /// switched protocols (a WebSocket), until either closes.
    async fn tunnel(&mut self, stream: &mut TcpStream, out: &mut Vec<u8>) -> Next {
        out.extend_from_slice(&self.ubuf);
        self.ubuf.clear();
        if self.write(out).await.is_err() {
            return Next::Close;
        }
        if !self.buf.is_empty() && stream.write_all(&self.buf).await.is_err() {
            return Next::Close;
        }
        self.buf.clear();
        match tunnel::copy(&mut self.client, stream, self.routing.listeners().body_timeout).await {
            tunnel::Ended::Closed(Ok(())) => {}
            tunnel::Ended::Closed(Err(err)) => debug!(error = %err, "router: a tunnel ended"),
            tunnel::Ended::Idle => debug!("router: closed a tunnel that was quiet for body_timeout"),
        }
        Next::Close
    }

    /// Answers with a page when the app could not be asked.
    async fn fail(
        &mut self,
        out: &mut Vec<u8>,
        status: StatusCode,
        why: &str,
        exchange: &mut Exchange,
        forward: &Forward,
    ) -> Next {
        out.clear();
        let next = Next::after_answer(&forward.framing, forward.close);
        page(out, status, why, exchange, forward.old_client, next);
        if self.write(out).await.is_err() {
            return Next::Close;
        }
        next
    }
}

/// A connection's one timer, for whichever deadline it waits on (a
/// request's head, an answer's head). A deadline costs no timer operation
/// of its own: the timer stays armed for an earlier one, and when it fires
/// before the deadline that counts, it is armed again for that one. So a
/// busy keep-alive connection touches tokio's timer wheel about once per
/// [`HEADER_READ_TIMEOUT`], not twice per request.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

/// A deadline passed.
struct Elapsed;

impl Timer {
    fn new() -> Timer {
        let armed = Instant::now() + HEADER_READ_TIMEOUT;
        Timer { sleep: Box::pin(tokio::time::sleep_until(armed)), armed }
    }

    /// `work`'s outcome, or [`Elapsed`] if `deadline` passes first.
    async fn within<F: Future>(&mut self, deadline: Instant, work: F) -> Result<F::Output, Elapsed> {
        if self.armed > deadline {
            self.arm(deadline);
        }
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                () = self.sleep.as_mut() => {
                    if Instant::now() >= deadline {
                        return Err(Elapsed);
                    }
                    self.arm(deadline);
                }
            }
        }
    }

    fn arm(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.armed = deadline;
    }
}

/// Why a request got no answer's head from its instance.
enum Failure {
    /// The instance refused, or closed before it answered.
    Refused(String),
    /// No answer's head within `upstream_timeout`.
    Timeout,
    /// The client went away, or sent a body that is not valid.
    Client,
    /// The client did not send more of the body within `body_timeout`.
    BodyTimeout,
}

/// Why an answer's head could not be read.
#[derive(Debug, thiserror::Error)]
enum HeadRead {
    #[error("the connection closed before an answer")]
    Closed,
    #[error("the answer's head is too large")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads from an instance until `ubuf` holds a whole answer's head (parsed
/// only once it is whole, by [`Conn::answer`]).
async fn read_head(stream: &mut TcpStream, ubuf: &mut BytesMut) -> Result<(), HeadRead> {
    loop {
        if codec::head_end(ubuf).is_some() {
            return Ok(());
        }
        if ubuf.len() > 2 * MAX_HEAD {
            return Err(HeadRead::TooLarge);
        }
        if ubuf.capacity() - ubuf.len() < 1024 {
            ubuf.reserve(4096);
        }
        if stream.read_buf(ubuf).await? == 0 {
            return Err(HeadRead::Closed);
        }
    }
}

/// The origin form of a request's target (`/PATH?QUERY`, or `*`) and, for
/// an absolute one (`http://HOST/PATH`), its host; `None` for a target that
/// is neither.
fn split_target(target: &str) -> (Option<&str>, Option<&str>) {
    if target.starts_with('/') || target == "*" {
        return (Some(target), None);
    }
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"));
    let Some(rest) = rest else { return (None, None) };
    match rest.find('/') {
        Some(at) => (Some(&rest[at..]), Some(&rest[..at])),
        None => (Some("/"), Some(rest)),
    }
}

fn status_line(out: &mut Vec<u8>, code: u16, reason: &str) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {code} {reason}\r\n");
}

/// `Connection` as the client needs it: `close` when the router closes,
/// `keep-alive` when an HTTP/1.0 client may keep the connection.
fn connection(head: &mut HeadWriter<'_>, old_client: bool, next: Next) {
    match next {
        Next::Close | Next::Linger => head.header("connection", b"close"),
        Next::KeepAlive if old_client => head.header("connection", b"keep-alive"),
        Next::KeepAlive => {}
    }
}

/// A short plain page of nap's own: the status and why.
fn page(out: &mut Vec<u8>, status: StatusCode, why: &str, exchange: &mut Exchange, old_client: bool, next: Next) {
    let text = page_text(status, why);
    exchange.status = status;
    exchange.bytes = text.len() as u64;
    status_line(out, status.as_u16(), status.canonical_reason().unwrap_or_default());
    let mut head = HeadWriter(out);
    head.header("content-type", PAGE_TYPE.as_bytes());
    head.number("content-length", text.len());
    head.header("x-request-id", exchange.id.as_bytes());
    connection(&mut head, old_client, next);
    head.end();
    out.extend_from_slice(text.as_bytes());
}

/// The head the client gets: the app's, less the hop-by-hop headers (and,
/// for an HTTP/1.0 client, the chunked coding the router takes off).
fn write_response_head(head: &ResponseHead<'_>, old_client: bool, next: Next, dechunk: bool, out: &mut Vec<u8>) {
    status_line(out, head.code, head.reason);
    let mut writer = HeadWriter(out);
    let switching = head.code == 101;
    for header in head.headers {
        let name = header.name;
        let hop = codec::is_hop_by_hop(name)
            && !(switching && (name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("connection")));
        if !(hop || dechunk && name.eq_ignore_ascii_case("transfer-encoding")) {
            writer.header(name, header.value);
        }
    }
    if !switching {
        connection(&mut writer, old_client, next);
    }
    writer.end();
}
