//! An HTTP/2 client's request, through hyper: routed ([`Routing`]),
//! forwarded over HTTP/1.1 to one of the app's instances with the
//! `X-Forwarded-*` headers and a request id, and its answer streamed back;
//! a bodiless GET, HEAD or OPTIONS that an instance refused goes once more
//! to another. When there is nothing to route to, a short page says why:
//! 400, 404, 408, 421, 431, 502, 503 or 504. Plain HTTP to an app that
//! forces HTTPS gets 308, and ACME's HTTP-01 challenges are answered from
//! the store.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version, header};
use tracing::{debug, info};

use crate::router::presence::InflightGuard;
use crate::router::route::{
    CLIENT_SAID_FORWARDED, Decision, Exchange, HOP_BY_HOP, PAGE_TYPE, Peer, Refusal, Routing, X_REQUEST_ID, host_of,
    page_text, request_id, spells_a_forwarding_header,
};
use crate::router::upstream::{Checkin, ClientBody, Outgoing, UpstreamError, Upstreams};

/// The most a request's headers may take; larger ones get 431.
const MAX_HEADERS: usize = 32 * 1024;
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the router answers with: the app's answer, relayed, or a page of its own.
pub type Body = Either<Relayed, Full<Bytes>>;

/// What hyper's path drops: [`HOP_BY_HOP`] and `Transfer-Encoding`.
fn hyper_hop_by_hop() -> impl Iterator<Item = &'static str> {
    HOP_BY_HOP.into_iter().chain(["transfer-encoding"])
}

/// Forwards HTTP/2 clients' requests to the apps' instances, with
/// connections to them of its own (hyper's client).
pub struct Forwarder {
    routing: Arc<Routing>,
    upstreams: Arc<Upstreams>,
}

impl Forwarder {
    pub fn new(routing: Arc<Routing>) -> Forwarder {
        let upstreams = Arc::new(Upstreams::default());
        upstreams.keep_swept();
        Forwarder { routing, upstreams }
    }

    pub(super) fn routing(&self) -> &Routing {
        &self.routing
    }

    /// Routes one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let sent_id = req.headers().get(X_REQUEST_ID).map(HeaderValue::as_bytes);
        let mut exchange =
            Exchange::new(req.method().clone(), req.uri().path(), request_id(sent_id), self.routing.observers.clone());
        let head: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        if head > MAX_HEADERS {
            return page(exchange, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request's headers are too large");
        }
        // The target's own authority (HTTP/2's `:authority`, an absolute
        // URL) names the host before any `Host` header (RFC 9112 3.2.2);
        // both, naming two hosts, would route by one and tell the app the
        // other: refused (RFC 9113 8.3.1).
        // Two `Host`s would let the app read another than the router routed by.
        if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
            return page(exchange, StatusCode::BAD_REQUEST, "the request has two Host headers");
        }
        let sent_host = req.headers().get(header::HOST).map(|h| h.to_str().ok());
        let authority = req.uri().authority().map(hyper::http::uri::Authority::as_str);
        if let (Some(authority), Some(sent)) = (authority, sent_host)
            && host_of(Some(authority)) != sent.and_then(|sent| host_of(Some(sent)))
        {
            return page(exchange, StatusCode::MISDIRECTED_REQUEST, "the request's :authority and Host differ");
        }
        let Some(host) = host_of(req.uri().host().or(sent_host.flatten())) else {
            return page(exchange, StatusCode::BAD_REQUEST, "the request has no valid Host header");
        };
        let forwarded = self.forward(req, peer, &host, &mut exchange).await;
        exchange.host = Some(host);
        let (mut answer, guard, checkin) = match forwarded {
            Ok(Forwarded::Streamed(answer, guard, checkin)) => (answer, guard, checkin),
            Ok(Forwarded::Whole(answer)) => {
                exchange.status = answer.status();
                return answer;
            }
            Err(Refusal(status, why)) => return page(exchange, status, &why),
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
        if let Some(answer) = self.routing.acme_challenge(&path).await {
            exchange.status = StatusCode::OK;
            exchange.bytes = answer.len() as u64;
            let mut response = Response::new(full(Bytes::from(answer)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            return Ok(Forwarded::Whole(response));
        }
        let (mut upstream, mut guard) = match self.routing.route(host, &path, peer, exchange)? {
            Decision::Forward(upstream, guard) => (upstream, guard),
            Decision::Redirect(location) => return Ok(Forwarded::Whole(redirect(&location))),
        };
        let app = exchange.app.clone().unwrap_or_else(|| Arc::from("-"));
        let invalid = || Refusal(StatusCode::BAD_REQUEST, "the request's path is not valid".to_owned());
        if !into_origin_form(req.uri_mut()) {
            return Err(invalid());
        }
        // The app speaks HTTP/1.1, whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        let port = self.routing.forwarded_port(peer.secure);
        let forwarding = Forwarding { peer, host, port, id: &exchange.id };
        forwarding.apply(req.headers_mut());
        // A bodiless GET, HEAD or OPTIONS that failed before any answer is
        // sent once more, to another instance where there is one: a switch
        // may have just retired the one picked, it may have just died, or a
        // pooled connection closed.
        let again = (matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && req.body().is_end_stream())
        .then(|| (req.method().clone(), req.uri().clone(), req.headers().clone()));
        let body_timeout = self.routing.listeners().body_timeout;
        let mut sent = self.send(upstream, req.map(|body| Either::Left(ClientBody::new(body, body_timeout)))).await;
        if let (Err(Failure::Refused(err)), Some((method, uri, headers))) = (&sent, again) {
            debug!(%app, %upstream, error = %err, "upstream refused; trying once more");
            drop(guard);
            (upstream, guard) = self.routing.pick(host, &app, Some(upstream))?;
            exchange.upstream = Some(upstream);
            let mut retry = Request::new(Either::Right(Empty::new()));
            *retry.method_mut() = method;
            *retry.headers_mut() = headers;
            *retry.uri_mut() = uri;
            sent = self.send(upstream, retry).await;
        }
        let (answer, checkin) = match sent {
            Ok(answer) => answer,
            Err(Failure::Refused(err)) if err.body_timed_out() => {
                let why = format!("the request's body did not arrive within {}s", body_timeout.as_secs());
                return Err(Refusal(StatusCode::REQUEST_TIMEOUT, why));
            }
            Err(Failure::Refused(err)) => {
                info!(%app, %upstream, error = %err, "upstream refused");
                self.routing.observers.metrics.upstream_error(&app);
                return Err(Refusal(StatusCode::BAD_GATEWAY, format!("{app} did not answer")));
            }
            Err(Failure::Timeout) => {
                self.routing.observers.metrics.upstream_error(&app);
                return Err(Refusal(StatusCode::GATEWAY_TIMEOUT, format!("{app} took too long to answer")));
            }
        };
        Ok(Forwarded::Streamed(answer, guard, checkin))
    }

    /// Sends a request to its upstream, waiting `upstream_timeout` at most
    /// for the answer's head.
    async fn send(
        &self,
        upstream: SocketAddr,
        req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, Checkin), Failure> {
        match tokio::time::timeout(self.routing.listeners().upstream_timeout, self.upstreams.send(upstream, req)).await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(Failure::Refused(err)),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

/// What became of a request the router could route.
enum Forwarded {
    /// The app's answer, whose body is still to stream; the guard counts
    /// the request in flight until it has, and then the connection goes back.
    Streamed(Response<Incoming>, InflightGuard, Checkin),
    /// An answer that is whole already (the router's own, or a switch of protocols).
    Whole(Response<Body>),
}

/// Why an upstream gave no answer.
enum Failure {
    /// It refused the connection or closed it before answering.
    Refused(UpstreamError),
    /// No answer's head within `upstream_timeout`.
    Timeout,
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

/// A short plain page of nap's own: the status and why.
fn page(mut exchange: Exchange, status: StatusCode, why: &str) -> Response<Body> {
    let text = page_text(status, why);
    exchange.status = status;
    exchange.bytes = text.len() as u64;
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PAGE_TYPE));
    headers.insert(X_REQUEST_ID, exchange.id.clone());
    response
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

/// What a request forwarded to an app says about where it came from.
struct Forwarding<'a> {
    peer: &'a Peer,
    /// The host asked for, lower-case and without a port.
    host: &'a str,
    port: &'a HeaderValue,
    id: &'a HeaderValue,
}

impl Forwarding<'_> {
    /// Drops the hop-by-hop headers, and adds what
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
