//! One request through the router: find the app by host, pick one of its
//! instances, forward the request with the `X-Forwarded-*` headers and a
//! request id, and stream the answer back. When there is nothing to route
//! to, a short page says why: 400, 404, 502, 503 or 504.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::info;

use super::presence::Inflight;
use super::table::RouteTable;

/// How long an upstream gets to answer with its headers before the client
/// gets 504.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// The most a request's headers may take; larger ones get 431.
const MAX_HEADERS: usize = 32 * 1024;
/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// What the router answers with: the upstream's body, streamed, or a page of its own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

pub struct Proxy {
    table: Arc<RouteTable>,
    inflight: Arc<Inflight>,
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(table: Arc<RouteTable>, inflight: Arc<Inflight>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector);
        Proxy { table, inflight, client }
    }

    /// Routes one request from `peer`, which reached the router on `port`.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr, port: u16) -> Response<Body> {
        let started = Instant::now();
        let id = request_id(&req);
        let head: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if head > MAX_HEADERS {
            return page(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request's headers are too large", &id);
        }
        let Some(host) = host_of(&req) else {
            return page(StatusCode::BAD_REQUEST, "the request has no valid Host header", &id);
        };
        let routes = self.table.routes();
        let Some(route) = routes.get(&host) else {
            let answer = page(StatusCode::NOT_FOUND, &format!("no app answers at {host}"), &id);
            log(&host, "-", None, &answer, started, &id);
            return answer;
        };
        let Some(upstream) = route.pick() else {
            let answer = page(StatusCode::SERVICE_UNAVAILABLE, &format!("{} has no instance serving", route.app), &id);
            log(&host, &route.app, None, &answer, started, &id);
            return answer;
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        match format!("http://{upstream}{path}").parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return page(StatusCode::BAD_REQUEST, "the request's path is not valid", &id),
        }
        forwarded(&mut req, peer, &host, port, &id);
        // In flight until the answer's body is sent: the release flow waits
        // for that before it retires this instance.
        let guard = self.inflight.enter(upstream);
        let answer = match tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(response)) => response.map(|body| {
                body.map_frame(move |frame| {
                    let _held = &guard;
                    frame
                })
                .boxed()
            }),
            Ok(Err(err)) => {
                info!(app = %route.app, %upstream, error = %err, "upstream refused");
                page(StatusCode::BAD_GATEWAY, &format!("{} did not answer", route.app), &id)
            }
            Err(_) => page(StatusCode::GATEWAY_TIMEOUT, &format!("{} took too long to answer", route.app), &id),
        };
        log(&host, &route.app, Some(upstream), &answer, started, &id);
        answer
    }
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

/// Drops the hop-by-hop headers and adds what the app should know about
/// the client: `X-Forwarded-For/-Proto/-Host/-Port` and `X-Request-Id`.
fn forwarded(req: &mut Request<Incoming>, peer: SocketAddr, host: &str, port: u16, id: &str) {
    let headers = req.headers_mut();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let client = peer.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {client}"),
        None => client,
    };
    for (name, value) in [
        ("x-forwarded-for", chain),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-forwarded-host", host.to_owned()),
        ("x-forwarded-port", port.to_string()),
        ("x-request-id", id.to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// A short plain page of nap's own: the status and why.
fn page(status: StatusCode, why: &str, id: &str) -> Response<Body> {
    let text = format!("{} {}\nnap: {why}\n", status.as_u16(), status.canonical_reason().unwrap_or_default());
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    response
}

/// The access-log line of one request.
fn log(host: &str, app: &str, upstream: Option<SocketAddr>, answer: &Response<Body>, started: Instant, id: &str) {
    let upstream = upstream.map_or_else(|| "-".to_owned(), |u| u.to_string());
    info!(
        target: "nap::access",
        app,
        host,
        status = answer.status().as_u16(),
        ms = started.elapsed().as_millis(),
        upstream,
        request_id = id,
        "request"
    );
}
