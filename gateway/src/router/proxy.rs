//! One request through the router: find the app by host, pick one of its
//! instances, forward the request with the `X-Forwarded-*` headers and a
//! request id, and stream the answer back; an `Upgrade` (WebSocket) becomes
//! a tunnel. When there is nothing to route to, a short page says why:
//! 400, 404, 502, 503 or 504. Plain HTTP to an app that forces HTTPS gets
//! 308, and ACME's HTTP-01 challenges are answered from the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nap_state::{Store, layout};
use tracing::{debug, info};

use super::access::AccessLog;
use super::metrics::Metrics;
use super::presence::{Inflight, InflightGuard};
use super::table::RouteTable;

/// How long a connection to an upstream may take before the client gets 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a request's headers may take; larger ones get 431.
const MAX_HEADERS: usize = 32 * 1024;
/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Where ACME's HTTP-01 challenges ask.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// What the router answers with: the upstream's body, streamed, or a page of its own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

/// The router's own ports, for redirects and `X-Forwarded-Port`, and how
/// long an upstream gets to answer with its headers before the client gets
/// 504 (`upstream_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub http: u16,
    pub https: Option<u16>,
    pub upstream_timeout: Duration,
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
    listeners: Listeners,
    observers: Observers,
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    pub fn new(
        table: Arc<RouteTable>,
        inflight: Arc<Inflight>,
        store: Store,
        listeners: Listeners,
        observers: Observers,
    ) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector);
        Proxy { table, inflight, store, listeners, observers, client }
    }

    /// Routes one request from `peer`, which came over HTTPS if `secure`.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr, secure: bool) -> Response<Body> {
        let mut exchange = Exchange::new(&req, self.observers.clone());
        let head: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if head > MAX_HEADERS {
            return exchange.page(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request's headers are too large");
        }
        let Some(host) = host_of(&req) else {
            return exchange.page(StatusCode::BAD_REQUEST, "the request has no valid Host header");
        };
        exchange.host.clone_from(&host);
        if let Some(answer) = self.acme_challenge(&req, &mut exchange).await {
            return answer;
        }
        let routes = self.table.routes();
        let Some(route) = routes.get(&host) else {
            return exchange.page(StatusCode::NOT_FOUND, &format!("no app answers at {host}"));
        };
        exchange.app.clone_from(&route.app);
        if let Some(https) = self.listeners.https
            && !secure
            && route.force_https
            && routes.cert(&host).is_some()
        {
            return exchange.redirect(&host, https, &req);
        }
        // In flight from the pick until the answer's body is sent (or the
        // tunnel closes): the release flow waits for that before it retires
        // this instance.
        let Some((upstream, guard)) = self.inflight.pick(&self.table, &host) else {
            return exchange.page(StatusCode::SERVICE_UNAVAILABLE, &format!("{} has no instance serving", route.app));
        };
        exchange.upstream = Some(upstream);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let Some(uri) = upstream_uri(upstream, &path) else {
            return exchange.page(StatusCode::BAD_REQUEST, "the request's path is not valid");
        };
        *req.uri_mut() = uri;
        // The app speaks HTTP/1.1, whatever the client spoke.
        let upgrade = upgrade_of(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        *req.version_mut() = Version::HTTP_11;
        let port = if secure { self.listeners.https.unwrap_or(443) } else { self.listeners.http };
        forwarded(req.headers_mut(), peer, &host, secure, port, &exchange.id, upgrade.as_ref());
        // A bodiless GET, HEAD or OPTIONS that failed before any answer is
        // sent once more, to the instance the table names then: a switch may
        // have just retired the one picked, or a pooled connection closed.
        let again = (matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && req.body().is_end_stream()
            && upgrade.is_none())
        .then(|| (req.method().clone(), path.clone(), req.headers().clone()));
        let (mut upstream, mut guard) = (upstream, guard);
        let mut sent = self.send(req.map(BodyExt::boxed)).await;
        if let (Err(Failure::Refused(err)), Some((method, path, headers))) = (&sent, again) {
            debug!(app = %route.app, %upstream, error = %err, "upstream refused; trying once more");
            drop(guard);
            let Some((next, next_guard)) = self.inflight.pick(&self.table, &host) else {
                return exchange
                    .page(StatusCode::SERVICE_UNAVAILABLE, &format!("{} has no instance serving", route.app));
            };
            (upstream, guard) = (next, next_guard);
            exchange.upstream = Some(upstream);
            let mut retry = Request::new(empty());
            *retry.method_mut() = method;
            *retry.headers_mut() = headers;
            let Some(uri) = upstream_uri(upstream, &path) else {
                return exchange.page(StatusCode::BAD_REQUEST, "the request's path is not valid");
            };
            *retry.uri_mut() = uri;
            sent = self.send(retry).await;
        }
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(Failure::Refused(err)) => {
                info!(app = %route.app, %upstream, error = %err, "upstream refused");
                self.observers.metrics.upstream_error(&route.app);
                return exchange.page(StatusCode::BAD_GATEWAY, &format!("{} did not answer", route.app));
            }
            Err(Failure::Timeout) => {
                self.observers.metrics.upstream_error(&route.app);
                return exchange.page(StatusCode::GATEWAY_TIMEOUT, &format!("{} took too long to answer", route.app));
            }
        };
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut answer);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard));
            exchange.status = answer.status();
            return answer.map(|_| empty());
        }
        for name in &HOP_BY_HOP {
            answer.headers_mut().remove(name);
        }
        exchange.status = answer.status();
        let exchange = Arc::new(exchange);
        answer.map(|body| {
            body.map_frame(move |frame| {
                let _held = &guard;
                if let Some(data) = frame.data_ref() {
                    exchange.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                frame
            })
            .boxed()
        })
    }

    /// Sends a request to its upstream, waiting `upstream_timeout` at most
    /// for the answer's head.
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.listeners.upstream_timeout, self.client.request(req)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(Failure::Refused(err)),
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// The answer to an ACME HTTP-01 challenge nap itself is meeting;
    /// `None` for any other request, which is routed as usual.
    async fn acme_challenge(&self, req: &Request<Incoming>, exchange: &mut Exchange) -> Option<Response<Body>> {
        let token = req.uri().path().strip_prefix(ACME_CHALLENGE)?;
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return None;
        }
        let answer = self.store.get(&layout::acme_challenge(token)).await.ok()??;
        exchange.status = StatusCode::OK;
        exchange.bytes.store(answer.len() as u64, Ordering::Relaxed);
        let mut response = Response::new(full(Bytes::from(answer)));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        Some(response)
    }
}

/// Why an upstream gave no answer.
enum Failure {
    /// It refused the connection or closed it before answering.
    Refused(hyper_util::client::legacy::Error),
    /// No answer's head within `upstream_timeout`.
    Timeout,
}

/// Copies both ways between the client and the upstream once both have
/// switched protocols, until either closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, guard: InflightGuard) {
    let _held = guard;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            debug!(error = %err, "router: an upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %err, "router: a tunnel ended");
    }
}

/// One request as the access log tells it; the line is written when the
/// answer's body is done (or the page is sent).
struct Exchange {
    started: Instant,
    observers: Observers,
    method: Method,
    /// The path, without the query: a query may carry a token.
    path: String,
    id: String,
    host: String,
    app: String,
    upstream: Option<SocketAddr>,
    status: StatusCode,
    bytes: AtomicU64,
}

impl Exchange {
    fn new(req: &Request<Incoming>, observers: Observers) -> Exchange {
        Exchange {
            started: Instant::now(),
            observers,
            method: req.method().clone(),
            path: req.uri().path().chars().take(256).collect(),
            id: request_id(req),
            host: "-".into(),
            app: "-".into(),
            upstream: None,
            status: StatusCode::OK,
            bytes: AtomicU64::new(0),
        }
    }

    /// A short plain page of nap's own: the status and why.
    fn page(mut self, status: StatusCode, why: &str) -> Response<Body> {
        let text = format!("{} {}\nnap: {why}\n", status.as_u16(), status.canonical_reason().unwrap_or_default());
        self.status = status;
        self.bytes.store(text.len() as u64, Ordering::Relaxed);
        let mut response = Response::new(full(Bytes::from(text)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let Ok(id) = HeaderValue::from_str(&self.id) {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }
        response
    }

    /// 308 to the same place over HTTPS.
    fn redirect(mut self, host: &str, port: u16, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location =
            if port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{port}{path}") };
        self.status = StatusCode::PERMANENT_REDIRECT;
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        if let Ok(location) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let upstream = self.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string());
        let elapsed = self.started.elapsed();
        let (status, bytes) = (self.status.as_u16(), self.bytes.load(Ordering::Relaxed));
        info!(
            target: "nap::access",
            app = %self.app,
            host = %self.host,
            method = %self.method,
            path = %self.path,
            status,
            ms = elapsed.as_millis(),
            bytes,
            upstream,
            request_id = %self.id,
            "request"
        );
        self.observers.metrics.request(&self.app, status, elapsed.as_secs_f64());
        if self.app != "-" {
            let at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339);
            self.observers.access.record(
                &self.app,
                format!(
                    "{} {} {} {} {status} {bytes} {}ms upstream={upstream} request_id={}",
                    at.unwrap_or_default(),
                    self.host,
                    self.method,
                    self.path,
                    elapsed.as_millis(),
                    self.id
                ),
            );
        }
    }
}

/// `http://UPSTREAM/PATH`: where a request for `path` goes.
fn upstream_uri(upstream: SocketAddr, path: &str) -> Option<Uri> {
    format!("http://{upstream}{path}").parse().ok()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
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

/// The host a request is for, lower-case and without its port; `None` if
/// it is missing or not a host name.
fn host_of(req: &Request<Incoming>) -> Option<String> {
    let raw = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host())?;
    let host = raw.rsplit_once(':').map_or(
        raw,
        |(host, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) { host } else { raw }
        },
    );
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| host.to_ascii_lowercase())
}

/// The client's request id, or a new one.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned)
}

/// Drops the hop-by-hop headers (but an upgrade's own), and adds what the
/// app should know about the client: `X-Forwarded-For/-Proto/-Host/-Port`
/// and `X-Request-Id`; and `Host`, which HTTP/2 carries elsewhere.
fn forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    host: &str,
    secure: bool,
    port: u16,
    id: &str,
    upgrade: Option<&HeaderValue>,
) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    if !headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(header::HOST, value);
    }
    let client = peer.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {client}"),
        None => client,
    };
    for (name, value) in [
        ("x-forwarded-for", chain),
        ("x-forwarded-proto", if secure { "https" } else { "http" }.to_owned()),
        ("x-forwarded-host", host.to_owned()),
        ("x-forwarded-port", port.to_string()),
        ("x-request-id", id.to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}
