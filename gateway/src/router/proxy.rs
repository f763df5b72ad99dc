//! One request through the router: find the app by host, pick one of its
//! instances, forward the request with the `X-Forwarded-*` headers and a
//! request id, and stream the answer back; an `Upgrade` (WebSocket) becomes
//! a tunnel. When there is nothing to route to, a short page says why:
//! 400, 404, 502, 503 or 504. Plain HTTP to an app that forces HTTPS gets
//! 308, and ACME's HTTP-01 challenges are answered from the store.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version, header};
use hyper_util::rt::TokioIo;
use nap_state::{Store, layout};
use tracing::{debug, info};

use super::access::{AccessLog, Dash, Entry, shown_path};
use super::h1::Pool;
use super::metrics::Metrics;
use super::presence::{Inflight, InflightGuard};
use super::table::RouteTable;
use super::upstream::{Checkin, ClientBody, Outgoing, UpstreamError, Upstreams};

/// The most a request's headers may take; larger ones get 431.
const MAX_HEADERS: usize = 32 * 1024;
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Where ACME's HTTP-01 challenges ask.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// What the router answers with: the app's answer, relayed, or a page of its own.
pub type Body = Either<Relayed, Full<Bytes>>;

/// Headers that belong to one connection and are never forwarded, either
/// way, by either of the router's paths. HTTP/2's through hyper drops
/// `Transfer-Encoding` too (hyper frames bodies anew); HTTP/1.1's keeps it,
/// as it relays chunks as they are, and drops `Proxy-Connection`
/// ([`super::h1`]).
pub(super) const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"];

/// What hyper's path drops: [`HOP_BY_HOP`] and `Transfer-Encoding`.
fn hyper_hop_by_hop() -> impl Iterator<Item = &'static str> {
    HOP_BY_HOP.into_iter().chain(["transfer-encoding"])
}

/// The router's own ports, for redirects and `X-Forwarded-Port`, how
/// long an upstream gets to answer with its headers before the client gets
/// 504 (`upstream_timeout`), and how long a client may keep the router
/// waiting for more of a request's body, or for it to take more of an
/// answer (`body_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub http: u16,
    pub https: Option<u16>,
    pub upstream_timeout: Duration,
    pub body_timeout: Duration,
}

/// Who learns of each request once it is answered: the access log that
/// `logs --router` reads, and the metrics.
#[derive(Clone)]
pub struct Observers {
    pub access: Arc<AccessLog>,
    pub metrics: Arc<Metrics>,
}

pub struct Proxy {
    table: Arc<RouteTable>,
    inflight: Arc<Inflight>,
    store: Store,
    /// The runtime the store's clients live on (the main one), which the
    /// router's threads ask the store through.
    control: tokio::runtime::Handle,
    listeners: Listeners,
    /// `X-Forwarded-Port` for plain HTTP and for HTTPS, made once.
    forwarded_ports: [HeaderValue; 2],
    pub(super) observers: Arc<Observers>,
    upstreams: Arc<Upstreams>,
    /// Connections to the instances for HTTP/1.1 clients ([`super::h1`]).
    pub(super) pool: Arc<Pool>,
}

/// The client at the other end of a connection: what each of its requests
/// tells the app about it, made once per connection.
pub struct Peer {
    pub addr: SocketAddr,
    /// Its IP, as `X-Forwarded-For` adds it.
    pub ip: HeaderValue,
    /// Whether it came over HTTPS.
    pub secure: bool,
    /// The host its TLS handshake named (SNI): its requests may only go to
    /// hosts the certificate served for it covers.
    pub server_name: Option<Box<str>>,
    /// A proxy of `trusted_proxies`: what it says of its own client
    /// (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`) reaches the app.
    pub trusted: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr, secure: bool, trusted: bool) -> Peer {
        let ip = HeaderValue::from_str(&addr.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"));
        Peer { addr, ip, secure, server_name: None, trusted }
    }

    /// Over TLS, the host the handshake named.
    #[must_use]
    pub fn with_server_name(mut self, name: Option<&str>) -> Peer {
        self.server_name = name.map(|name| name.to_ascii_lowercase().into());
        self
    }
}

/// Headers a client may send about where a request came from, which the
/// app gets only from a trusted proxy; `X-Forwarded-For` is set anew
/// instead.
pub(super) const CLIENT_SAID_FORWARDED: [&str; 2] = ["forwarded", "x-real-ip"];

/// The headers the router tells the app where a request came from with, or
/// drops ([`CLIENT_SAID_FORWARDED`]).
const FORWARDING: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-request-id",
    "forwarded",
    "x-real-ip",
];

/// Whether `name` spells one of the forwarding headers with `_` for `-`
/// (`X_Real_IP`): CGI, PHP, WSGI and Rack read both as one variable
/// (`HTTP_X_REAL_IP`), so a client's would pass for the router's. Dropped
/// from every request, as nginx drops names with `_`.
pub(super) fn spells_a_forwarding_header(name: &str) -> bool {
    name.contains('_')
        && FORWARDING.iter().any(|forwarding| {
            forwarding.len() == name.len()
                && forwarding
                    .bytes()
                    .zip(name.bytes())
                    .all(|(f, n)| f == n.to_ascii_lowercase() || (f == b'-' && n == b'_'))
        })
}

impl Proxy {
    /// Made on the runtime that runs the store's clients.
    pub fn new(
        table: Arc<RouteTable>,
        inflight: Arc<Inflight>,
        store: Store,
        listeners: Listeners,
        observers: Observers,
    ) -> Proxy {
        let upstreams = Arc::new(Upstreams::default());
        upstreams.keep_swept();
        let pool = Arc::new(Pool::default());
        pool.keep_swept();
        let https = listeners.https.unwrap_or(443);
        let forwarded_ports = [HeaderValue::from(listeners.http), HeaderValue::from(https)];
        let observers = Arc::new(observers);
        let control = tokio::runtime::Handle::current();
        Proxy { table, inflight, store, control, listeners, forwarded_ports, observers, upstreams, pool }
    }

    pub(super) fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// `X-Forwarded-Port` for a client over plain HTTP or HTTPS.
    pub(super) fn forwarded_port(&self, secure: bool) -> &HeaderValue {
        &self.forwarded_ports[usize::from(secure)]
    }

    /// Where a request for `host` (`path` with its query) goes: an instance
    /// picked and counted in flight, or the redirect to HTTPS; or why
    /// nowhere. (An ACME challenge is answered before: [`Self::acme_challenge`].)
    pub(super) fn route(
        &self,
        host: &str,
        path: &str,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<Decision, Refusal> {
        let routes = self.table.routes();
        let route =
            routes.get(host).ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no app answers at {host}")))?;
        let app = Arc::clone(exchange.app.insert(Arc::clone(&route.app)));
        // Over TLS, only to a host the connection's certificate covers: the
        // one the router serves for the handshake's name serves this host too.
        if let Some(name) = peer.server_name.as_deref()
            && name != host
        {
            let leaf = |host: &str| routes.cert(host).and_then(|cert| cert.cert.first());
            if leaf(name).is_none() || leaf(name) != leaf(host) {
                return Err(Refusal(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("this TLS connection is for {name}, whose certificate does not cover {host}"),
                ));
            }
        }
        if let Some(https) = self.listeners.https
            && !peer.secure
            && route.force_https
            && routes.cert(host).is_some()
        {
            let location =
                if https == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{https}{path}") };
            return Ok(Decision::Redirect(location));
        }
        let (upstream, guard) = self.pick(host, &app, None)?;
        exchange.upstream = Some(upstream);
        Ok(Decision::Forward(upstream, guard))
    }

    /// An instance of `app`, at `host`, as the table has it now (not
    /// `avoid`, which just refused), counted in flight from now until the
    /// guard goes: the release flow waits for that before it retires the
    /// instance.
    pub(super) fn pick(
        &self,
        host: &str,
        app: &str,
        avoid: Option<SocketAddr>,
    ) -> Result<(SocketAddr, InflightGuard), Refusal> {
        self.inflight
            .pick(&self.table, host, avoid)
            .ok_or_else(|| Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("{app} has no instance serving")))
    }

    /// Routes one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let sent_id = req.headers().get(X_REQUEST_ID).map(HeaderValue::as_bytes);
        let mut exchange =
            Exchange::new(req.method().clone(), req.uri().path(), request_id(sent_id), self.observers.clone());
        let head: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if head > MAX_HEADERS {
            return exchange
                .into_page(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request's headers are too large");
        }
        // The target's own authority (HTTP/2's `:authority`, an absolute
        // URL) names the host before any `Host` header (RFC 9112 3.2.2);
        // both, naming two hosts, would route by one and tell the app the
        // other: refused (RFC 9113 8.3.1).
        // Two `Host`s would let the app read another than the router routed by.
        if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
            return exchange.into_page(StatusCode::BAD_REQUEST, "the request has two Host headers");
        }
        let sent_host = req.headers().get(header::HOST).map(|h| h.to_str().ok());
        let authority = req.uri().authority().map(hyper::http::uri::Authority::as_str);
        if let (Some(authority), Some(sent)) = (authority, sent_host)
            && host_of(Some(authority)) != sent.and_then(|sent| host_of(Some(sent)))
        {
            return exchange.into_page(StatusCode::MISDIRECTED_REQUEST, "the request's :authority and Host differ");
        }
        let Some(host) = host_of(req.uri().host().or(sent_host.flatten())) else {
            return exchange.into_page(StatusCode::BAD_REQUEST, "the request has no valid Host header");
        };
        let forwarded = self.forward(req, peer, &host, &mut exchange).await;
        exchange.host = Some(host);
        let (mut answer, guard, checkin) = match forwarded {
            Ok(Forwarded::Streamed(answer, guard, checkin)) => (answer, guard, checkin),
            Ok(Forwarded::Whole(answer)) => {
                exchange.status = answer.status();
                return answer;
            }
            Err(Refusal(status, why)) => return exchange.into_page(status, &why),
        };
        for name in hyper_hop_by_hop() {
            answer.headers_mut().remove(name);
        }
        exchange.status = answer.status();
        answer.map(|body| Either::Left(Relayed { body, exchange, _guard: guard, checkin: Some(checkin) }))
    }

    /// Finds the app at `host`, and forwards the request to one of its
    /// instances; or answers it without the app (an ACME challenge, the
    /// redirect to HTTPS), or says why it cannot.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        host: &str,
        exchange: &mut Exchange,
    ) -> Result<Forwarded, Refusal> {
        let path = req.uri().path_and_query().map_or("/", PathAndQuery::as_str).to_owned();
        if let Some(answer) = self.acme_challenge(&path).await {
            exchange.status = StatusCode::OK;
            exchange.bytes = answer.len() as u64;
            let mut response = Response::new(full(Bytes::from(answer)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            return Ok(Forwarded::Whole(response));
        }
        let (mut upstream, mut guard) = match self.route(host, &path, peer, exchange)? {
            Decision::Forward(upstream, guard) => (upstream, guard),
            Decision::Redirect(location) => return Ok(Forwarded::Whole(redirect(&location))),
        };
        let app = exchange.app.clone().unwrap_or_else(|| Arc::from("-"));
        let invalid = || Refusal(StatusCode::BAD_REQUEST, "the request's path is not valid".to_owned());
        if !into_origin_form(req.uri_mut()) {
            return Err(invalid());
        }
        // The app speaks HTTP/1.1, whatever the client spoke.
        let upgrade = upgrade_of(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        *req.version_mut() = Version::HTTP_11;
        let port = &self.forwarded_ports[usize::from(peer.secure)];
        let forwarding = Forwarding { peer, host, port, id: &exchange.id, upgrade: upgrade.as_ref() };
        forwarding.apply(req.headers_mut());
        // A bodiless GET, HEAD or OPTIONS that failed before any answer is
        // sent once more, to another instance where there is one: a switch
        // may have just retired the one picked, it may have just died, or a
        // pooled connection closed.
        let again = (matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && req.body().is_end_stream()
            && upgrade.is_none())
        .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
        let body_timeout = self.listeners.body_timeout;
        let mut sent = self.send(upstream, req.map(|body| Either::Left(ClientBody::new(body, body_timeout)))).await;
        if let (Err(Failure::Refused(err)), Some((method, uri, headers))) = (&sent, again) {
            debug!(%app, %upstream, error = %err, "upstream refused; trying once more");
            drop(guard);
            (upstream, guard) = self.pick(host, &app, Some(upstream))?;
            exchange.upstream = Some(upstream);
            let mut retry = Request::new(Either::Right(Empty::new()));
            *retry.method_mut() = method;
            *retry.headers_mut() = headers;
            *retry.uri_mut() = uri;
            sent = self.send(upstream, retry).await;
        }
        let (mut answer, checkin) = match sent {
            Ok(answer) => answer,
            Err(Failure::Refused(err)) if err.body_timed_out() => {
                let why = format!("the request's body did not arrive within {}s", body_timeout.as_secs());
                return Err(Refusal(StatusCode::REQUEST_TIMEOUT, why));
            }
            Err(Failure::Refused(err)) => {
                info!(%app, %upstream, error = %err, "upstream refused");
                self.observers.metrics.upstream_error(&app);
                return Err(Refusal(StatusCode::BAD_GATEWAY, format!("{app} did not answer")));
            }
            Err(Failure::Timeout) => {
                self.observers.metrics.upstream_error(&app);
                return Err(Refusal(StatusCode::GATEWAY_TIMEOUT, format!("{app} took too long to answer")));
            }
        };
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut answer);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard, self.listeners.body_timeout));
            return Ok(Forwarded::Whole(answer.map(|_| empty())));
        }
        Ok(Forwarded::Streamed(answer, guard, checkin))
    }

    /// Sends a request to its upstream, waiting `upstream_timeout` at most
    /// for the answer's head.
    async fn send(
        &self,
        upstream: SocketAddr,
        req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, Checkin), Failure> {
        match tokio::time::timeout(self.listeners.upstream_timeout, self.upstreams.send(upstream, req)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(Failure::Refused(err)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The answer to an ACME HTTP-01 challenge nap itself is meeting, at
    /// `path`; `None` for any other request, which is routed as usual.
    pub(super) async fn acme_challenge(&self, path: &str) -> Option<Vec<u8>> {
        let (store, key) = (self.store.clone(), layout::acme_challenge(acme_token(path)?));
        self.control.spawn(async move { store.get(&key).await }).await.ok()?.ok()?
    }
}

/// The token of an ACME HTTP-01 challenge at `path`; `None` for any other path.
pub(super) fn acme_token(path: &str) -> Option<&str> {
    path.strip_prefix(ACME_CHALLENGE)
        .filter(|token| !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// Where a request goes ([`Proxy::route`]).
pub(super) enum Decision {
    /// Forward it to this instance; the guard counts it in flight.
    Forward(SocketAddr, InflightGuard),
    /// 308 to this HTTPS address.
    Redirect(String),
}

/// What became of a request the router could route.
enum Forwarded {
    /// The app's answer, whose body is still to stream; the guard counts
    /// the request in flight until it has, and then the connection goes back.
    Streamed(Response<Incoming>, InflightGuard, Checkin),
    /// An answer that is whole already (the router's own, or a switch of protocols).
    Whole(Response<Body>),
}

/// Why the router answers a request itself: the status and the reason, for its page.
pub(super) struct Refusal(pub StatusCode, pub String);

/// Why an upstream gave no answer.
enum Failure {
    /// It refused the connection or closed it before answering.
    Refused(UpstreamError),
    /// No answer's head within `upstream_timeout`.
    Timeout,
}

/// Copies both ways between the client and the upstream once both have
/// switched protocols, until either closes or both stay quiet for `idle`.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: InflightGuard,
    idle: Duration,
) {
    let _held = guard;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            debug!(error = %err, "router: an upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let super::tunnel::Ended::Closed(Err(err)) = super::tunnel::copy(&mut client, &mut upstream, idle).await {
        debug!(error = %err, "router: a tunnel ended");
    }
}

/// The app's answer's body on its way to the client. The request is in
/// flight until it is dropped; then the access line is written, and the
/// connection goes back to the pool if the body was read to its end.
pub struct Relayed {
    body: Incoming,
    exchange: Exchange,
    _guard: InflightGuard,
    checkin: Option<Checkin>,
}

impl hyper::body::Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.exchange.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        if self.body.is_end_stream()
            && let Some(checkin) = self.checkin.take()
        {
            checkin.put_back();
        }
    }
}

/// One request as the access log tells it; the line is written when the
/// answer's body is done (or the page is sent).
pub(super) struct Exchange {
    started: Instant,
    observers: Arc<Observers>,
    method: Method,
    /// The path as the line shows it (see [`shown_path`]), never the query.
    path: Box<str>,
    pub id: HeaderValue,
    pub host: Option<String>,
    pub app: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub status: StatusCode,
    pub bytes: u64,
}

impl Exchange {
    pub fn new(method: Method, path: &str, id: HeaderValue, observers: Arc<Observers>) -> Exchange {
        let path = shown_path(path.split_once('?').map_or(path, |(path, _)| path)).into();
        Exchange {
            started: Instant::now(),
            observers,
            method,
            path,
            id,
            host: None,
            app: None,
            upstream: None,
            status: StatusCode::OK,
            bytes: 0,
        }
    }

    /// A short plain page of nap's own: the status and why.
    fn into_page(mut self, status: StatusCode, why: &str) -> Response<Body> {
        let text = page_text(status, why);
        self.status = status;
        self.bytes = text.len() as u64;
        let mut response = Response::new(full(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PAGE_TYPE));
        headers.insert(X_REQUEST_ID, self.id.clone());
        response
    }
}

/// The type of the router's own pages.
pub(super) const PAGE_TYPE: &str = "text/plain; charset=utf-8";

/// The text of a page of the router's own: the status, and why.
pub(super) fn page_text(status: StatusCode, why: &str) -> String {
    format!("{} {}\nnap: {why}\n", status.as_u16(), status.canonical_reason().unwrap_or_default())
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let (status, bytes, ms) = (self.status.as_u16(), self.bytes, elapsed.as_millis());
        let path = &*self.path;
        // Ids are printable ASCII ([`request_id`]).
        let request_id = self.id.to_str().unwrap_or("-");
        let app = self.app.as_deref().unwrap_or("-");
        info!(
            target: "nap::access",
            app = %app,
            host = %Dash(self.host.as_deref()),
            method = %self.method,
            path = %path,
            status,
            ms,
            bytes,
            upstream = %Dash(self.upstream),
            request_id = %request_id,
            "request"
        );
        self.observers.metrics.request(app, status, elapsed.as_secs_f64());
        if let Some(app) = &self.app {
            let entry = Entry {
                at: time::OffsetDateTime::now_utc(),
                host: self.host.take().unwrap_or_default(),
                method: self.method.clone(),
                path: std::mem::take(&mut self.path),
                status,
                bytes,
                ms,
                upstream: self.upstream,
                request_id: request_id.into(),
            };
            self.observers.access.record(app, entry);
        }
    }
}

/// 308 to `location`.
fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Puts `uri` in the form an app is asked in, `/PATH?QUERY`, from
/// another (absolute, or HTTP/2's); false if it cannot.
fn into_origin_form(uri: &mut Uri) -> bool {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return true;
    }
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).map(|origin| *uri = origin).is_ok()
}

fn full(bytes: Bytes) -> Body {
    Either::Right(Full::new(bytes))
}

fn empty() -> Body {
    full(Bytes::new())
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection:
/// upgrade` with `Upgrade: websocket`, say).
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned()).flatten()
}

/// The host a request is for (`sent` in its `Host`), lower-case and
/// without its port; `None` if it is missing or not a host name.
pub(super) fn host_of(sent: Option<&str>) -> Option<String> {
    let raw = sent?;
    let host = raw.rsplit_once(':').map_or(
        raw,
        |(host, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) { host } else { raw }
        },
    );
    // `www.example.com.` (fully qualified) is `www.example.com`.
    let host = host.strip_suffix('.').unwrap_or(host);
    // Labels of letters, digits and `-`, none empty (`a..b` is no host, as
    // nginx says too).
    let valid = host.len() <= 253
        && host.split('.').all(|label| !label.is_empty())
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| host.to_ascii_lowercase())
}

/// The client's request id (`sent`: printable, 128 bytes at most), or a
/// new one: 32 hex digits.
pub(super) fn request_id(sent: Option<&[u8]>) -> HeaderValue {
    let sent = sent.filter(|id| !id.is_empty() && id.len() <= 128).and_then(|id| HeaderValue::from_bytes(id).ok());
    if let Some(id) = sent.filter(|id| id.to_str().is_ok()) {
        return id;
    }
    let mut hex = [0u8; 32];
    let mut n = rand::random::<u128>();
    for digit in hex.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// What a request forwarded to an app says about where it came from.
struct Forwarding<'a> {
    peer: &'a Peer,
    /// The host asked for, lower-case and without a port.
    host: &'a str,
    port: &'a HeaderValue,
    id: &'a HeaderValue,
    upgrade: Option<&'a HeaderValue>,
}

impl Forwarding<'_> {
    /// Drops the hop-by-hop headers (but an upgrade's own), and adds what
    /// the app should know about the client: `X-Forwarded-For/-Proto/-Host
    /// /-Port` and `X-Request-Id`; and `Host`, which HTTP/2 carries elsewhere.
    fn apply(&self, headers: &mut HeaderMap) {
        // The Host header as sent, when it is already the host (no port, lower case).
        let host = match headers.get(header::HOST).filter(|sent| sent.as_bytes() == self.host.as_bytes()) {
            Some(sent) => Some(sent.clone()),
            None => HeaderValue::from_str(self.host).ok(),
        };
        for name in hyper_hop_by_hop() {
            headers.remove(name);
        }
        if let Some(protocol) = self.upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        if let Some(host) = &host
            && !headers.contains_key(header::HOST)
        {
            headers.insert(header::HOST, host.clone());
        }
        if !self.peer.trusted {
            for name in CLIENT_SAID_FORWARDED {
                headers.remove(name);
            }
        }
        let aliases: Vec<HeaderName> =
            headers.keys().filter(|name| spells_a_forwarding_header(name.as_str())).cloned().collect();
        for alias in aliases {
            headers.remove(alias);
        }
        let chain = match headers.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes).filter(|_| self.peer.trusted) {
            Some(before) => {
                let mut chain = Vec::with_capacity(before.len() + 2 + self.peer.ip.len());
                chain.extend_from_slice(before);
                chain.extend_from_slice(b", ");
                chain.extend_from_slice(self.peer.ip.as_bytes());
                HeaderValue::from_bytes(&chain).unwrap_or_else(|_| self.peer.ip.clone())
            }
            None => self.peer.ip.clone(),
        };
        headers.insert(X_FORWARDED_FOR, chain);
        let proto = if self.peer.secure { "https" } else { "http" };
        headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(proto));
        if let Some(host) = host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        headers.insert(HeaderName::from_static("x-forwarded-port"), self.port.clone());
        headers.insert(X_REQUEST_ID, self.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_forwarding_headers_spelt_with_underscores_are_known() {
        use super::spells_a_forwarding_header as alias;
        for name in ["X_Real_IP", "x_forwarded_for", "X-Forwarded_For", "x_request_id"] {
            assert!(alias(name), "{name}");
        }
        for name in ["X-Real-IP", "x_real_ipx", "my_header", "forwarded"] {
            assert!(!alias(name), "{name}");
        }
    }

    #[test]
    fn a_host_is_lower_case_without_its_port_or_last_dot() {
        assert_eq!(host_of(Some("Hello.Example.com:8080")).as_deref(), Some("hello.example.com"));
        assert_eq!(host_of(Some("hello.localhost.")).as_deref(), Some("hello.localhost"));
        assert_eq!(host_of(Some("10.0.0.1")).as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn a_missing_empty_or_malformed_host_is_none() {
        for sent in ["", ".", ":80", "a..b", ".example.com", "bad_host!", "[::1]:80", "a b", "x:y:z"] {
            assert_eq!(host_of(Some(sent)), None, "{sent:?}");
        }
        assert_eq!(host_of(None), None);
    }
}
