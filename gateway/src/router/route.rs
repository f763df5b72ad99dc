//! Where a request goes, whichever protocol brought it ([`super::h1`]
//! serves HTTP/1.1, [`super::h2`] HTTP/2): the app at its host and one of
//! its instances, the redirect to HTTPS, or a page of the router's own
//! saying why not (400, 404, 421, 503); and ACME's HTTP-01 challenges,
//! answered from the store. Here too is what both paths share of a
//! request: its access line ([`Exchange`]), its id, its host, and the
//! headers that are never forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use nap_state::{Store, layout};
use tracing::info;

use super::access::{AccessLog, Dash, Entry, shown_path};
use super::metrics::Metrics;
use super::presence::{Inflight, InflightGuard};
use super::table::RouteTable;

pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where ACME's HTTP-01 challenges ask.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Headers that belong to one connection and are never forwarded, either
/// way, by either of the router's paths. HTTP/2's through hyper drops
/// `Transfer-Encoding` too (hyper frames bodies anew); HTTP/1.1's keeps it,
/// as it relays chunks as they are, and drops `Proxy-Connection`
/// ([`super::h1`]).
pub(super) const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"];

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

/// What deciding where requests go takes: the route table, the requests in
/// flight per instance, the store (for ACME challenges), the router's
/// ports and timeouts, and who learns of each request.
pub struct Routing {
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

impl Routing {
    /// Made on the runtime that runs the store's clients.
    pub fn new(
        table: Arc<RouteTable>,
        inflight: Arc<Inflight>,
        store: Store,
        listeners: Listeners,
        observers: Observers,
    ) -> Routing {
        let https = listeners.https.unwrap_or(443);
        let forwarded_ports = [HeaderValue::from(listeners.http), HeaderValue::from(https)];
        let observers = Arc::new(observers);
        let control = tokio::runtime::Handle::current();
        Routing { table, inflight, store, control, listeners, forwarded_ports, observers }
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

/// Where a request goes ([`Routing::route`]).
pub(super) enum Decision {
    /// Forward it to this instance; the guard counts it in flight.
    Forward(SocketAddr, InflightGuard),
    /// 308 to this HTTPS address.
    Redirect(String),
}

/// Why the router answers a request itself: the status and the reason, for its page.
pub(super) struct Refusal(pub StatusCode, pub String);

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
