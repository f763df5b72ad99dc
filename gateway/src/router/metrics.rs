//! The router's Prometheus metrics, served as text on `metrics_listen`
//! (off by default): requests by app and status class, a latency histogram
//! by app, open client connections, those closed or refused at
//! `max_connections`, and upstream errors by app.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    app: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct App {
    app: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Request, Counter>,
    latency: Family<App, Histogram>,
    upstream_errors: Family<App, Counter>,
    connections: Gauge,
    made_room: Counter,
    refused: Counter,
    /// Each app's series, looked up once: a request then only counts.
    apps: RwLock<HashMap<Arc<str>, AppSeries>>,
}

/// One app's series in the families above (a series is shared, not copied).
struct AppSeries {
    /// By status class, `1xx` to `5xx`; made on its first request, so that
    /// only classes seen are listed.
    classes: [OnceLock<Counter>; 5],
    latency: Histogram,
    upstream_errors: OnceLock<Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("nap_router");
        let requests = Family::<Request, Counter>::default();
        registry.register("requests", "Requests answered, by app and status class", requests.clone());
        let latency = Family::<App, Histogram>::new_with_constructor(|| {
            // 1 ms to about 16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("request_duration_seconds", "Time to the answer's last byte, by app", latency.clone());
        let upstream_errors = Family::<App, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests an app's instance refused or did not answer in time",
            upstream_errors.clone(),
        );
        let connections = Gauge::default();
        registry.register("open_connections", "Client connections open now", connections.clone());
        let (made_room, refused) = (Counter::default(), Counter::default());
        registry.register(
            "connections_closed_for_room",
            "Client connections waiting on their client, closed to make room at max_connections",
            made_room.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused at max_connections, every open one busy",
            refused.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            upstream_errors,
            connections,
            made_room,
            refused,
            apps: RwLock::default(),
        })
    }

    /// Does `count` with `app`'s series: under the read lock, with no
    /// count of references taken (the lock is shared by every request).
    fn with_series<T>(&self, app: &str, count: impl FnOnce(&AppSeries) -> T) -> T {
        if let Some(series) = self.apps.read().unwrap_or_else(PoisonError::into_inner).get(app) {
            return count(series);
        }
        let mut apps = self.apps.write().unwrap_or_else(PoisonError::into_inner);
        let series = apps.entry(app.into()).or_insert_with(|| {
            let latency = self.latency.get_or_create(&App { app: app.to_owned() }).clone();
            AppSeries { classes: Default::default(), latency, upstream_errors: OnceLock::new() }
        });
        count(series)
    }

    /// Counts one answered request of `app` (`-` when no app answers).
    pub fn request(&self, app: &str, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5);
        self.with_series(app, |series| {
            series.classes[class - 1]
                .get_or_init(|| {
                    let labels = Request { app: app.to_owned(), status: format!("{class}xx") };
                    self.requests.get_or_create(&labels).clone()
                })
                .inc();
            series.latency.observe(seconds);
        });
    }

    pub fn upstream_error(&self, app: &str) {
        self.with_series(app, |series| {
            series
                .upstream_errors
                .get_or_init(|| self.upstream_errors.get_or_create(&App { app: app.to_owned() }).clone())
                .inc();
        });
    }

    /// Counts a connection closed to make room for a new one.
    pub fn made_room(&self) {
        self.made_room.inc();
    }

    /// Counts a connection refused: at the cap, and none could be closed.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// Counts an open client connection until the guard goes.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(Arc::clone(self))
    }

    fn text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Serves the metrics on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    info!(addr = ?listener.local_addr().ok(), "router metrics listening");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move {
                    let mut response = if req.uri().path() == "/metrics" {
                        Response::new(Full::new(Bytes::from(metrics.text())))
                    } else {
                        let mut page = Response::new(Full::new(Bytes::from_static(b"nap: metrics are at /metrics\n")));
                        *page.status_mut() = StatusCode::NOT_FOUND;
                        page
                    };
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        // prometheus-client writes OpenMetrics text (`# EOF` at the end).
                        header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                debug!(error = %err, "metrics connection ended");
            }
        });
    }
}
