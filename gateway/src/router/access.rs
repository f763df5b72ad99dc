//! The router's access log, per app, for `logs APP --router`: the last
//! lines of each app, and every new one as it comes. It lives in the
//! process that routes (`nap serve`); the same lines also go to the log
//! through tracing.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::Method;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

/// Lines kept per app.
const KEPT: usize = 1000;
/// The most of a path a line shows.
const PATH_SHOWN: usize = 256;

/// One request as the access log tells it. It is kept as fields and only
/// written out as a line when someone reads it: the router pays for the
/// fields, not for the text. Each field is its own copy: a part of the
/// request (its path, say) would keep the connection's whole read buffer.
#[derive(Debug)]
pub struct Entry {
    pub at: OffsetDateTime,
    pub host: String,
    pub method: Method,
    /// The path (see [`shown_path`]), never the query: a query may carry a token.
    pub path: Box<str>,
    pub status: u16,
    pub bytes: u64,
    pub ms: u128,
    pub upstream: Option<SocketAddr>,
    pub request_id: Box<str>,
}

/// A request's path as a line shows it: at most [`PATH_SHOWN`] bytes of it.
pub fn shown_path(path: &str) -> &str {
    // A path is ASCII (hyper refuses anything else), so any cut is a char boundary.
    path.get(..PATH_SHOWN).unwrap_or(path)
}

/// `AT HOST METHOD PATH STATUS BYTES MSms upstream=IP:PORT request_id=ID`.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.format(&Rfc3339).unwrap_or_default();
        write!(
            f,
            "{at} {} {} {} {} {} {}ms upstream=",
            self.host, self.method, self.path, self.status, self.bytes, self.ms
        )?;
        match self.upstream {
            Some(upstream) => write!(f, "{upstream}")?,
            None => f.write_str("-")?,
        }
        write!(f, " request_id={}", self.request_id)
    }
}

/// A value, or `-` for none, as the access log shows it.
pub struct Dash<T>(pub Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// An access-log entry of one app, as followers get it.
#[derive(Debug, Clone)]
pub struct Line {
    pub app: Arc<str>,
    pub entry: Arc<Entry>,
}

pub struct AccessLog {
    kept: Mutex<HashMap<Arc<str>, VecDeque<Arc<Entry>>>>,
    live: broadcast::Sender<Line>,
    /// Followers now: with none, a line is not sent (asking the channel
    /// takes its lock, on every request).
    followers: Arc<AtomicUsize>,
    routing: AtomicBool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            kept: Mutex::default(),
            live: broadcast::channel(1024).0,
            followers: Arc::default(),
            routing: AtomicBool::new(false),
        }
    }
}

/// New access-log entries, of every app, as they come.
pub struct Follower {
    live: broadcast::Receiver<Line>,
    followers: Arc<AtomicUsize>,
}

impl Follower {
    pub async fn recv(&mut self) -> Result<Line, broadcast::error::RecvError> {
        self.live.recv().await
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AccessLog {
    fn kept(&self) -> MutexGuard<'_, HashMap<Arc<str>, VecDeque<Arc<Entry>>>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks this process as one that routes.
    pub fn start(&self) {
        self.routing.store(true, Ordering::Relaxed);
    }

    /// Whether a router runs in this process.
    pub fn routing(&self) -> bool {
        self.routing.load(Ordering::Relaxed)
    }

    pub fn record(&self, app: &Arc<str>, entry: Entry) {
        let entry = Arc::new(entry);
        {
            let mut kept = self.kept();
            let lines = match kept.get_mut(app) {
                Some(lines) => lines,
                None => kept.entry(Arc::clone(app)).or_default(),
            };
            if lines.len() == KEPT {
                lines.pop_front();
            }
            lines.push_back(Arc::clone(&entry));
        }
        if self.followers.load(Ordering::Relaxed) > 0 {
            // A follower that went away in between is fine.
            let _ = self.live.send(Line { app: Arc::clone(app), entry });
        }
    }

    /// The app's last `tail` entries (all kept, with `None`).
    pub fn tail(&self, app: &str, tail: Option<usize>) -> Vec<Arc<Entry>> {
        let kept = self.kept();
        let Some(lines) = kept.get(app) else { return Vec::new() };
        let skip = tail.map_or(0, |tail| lines.len().saturating_sub(tail));
        lines.iter().skip(skip).cloned().collect()
    }

    /// Every entry from now on, of every app.
    pub fn follow(&self) -> Follower {
        self.followers.fetch_add(1, Ordering::Relaxed);
        Follower { live: self.live.subscribe(), followers: Arc::clone(&self.followers) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper::{Method, Uri};
    use time::macros::datetime;

    use super::{AccessLog, Entry, shown_path};

    fn entry(n: u64, uri: &str) -> Entry {
        Entry {
            at: datetime!(2026-11-29 12:00:00 UTC),
            host: "shop.example.com".into(),
            method: Method::GET,
            path: shown_path(uri.parse::<Uri>().expect("a path").path()).into(),
            status: 200,
            bytes: n,
            ms: 3,
            upstream: Some("172.31.0.5:5000".parse().expect("an address")),
            request_id: "abc".into(),
        }
    }

    #[test]
    fn keeps_the_last_lines_of_each_app() {
        let log = AccessLog::default();
        let mut live = log.follow();
        let (shop, blog): (Arc<str>, Arc<str>) = ("shop".into(), "blog".into());
        for n in 0..1005 {
            log.record(&shop, entry(n, "/"));
        }
        log.record(&blog, entry(0, "/"));
        let tail = log.tail("shop", Some(2));
        assert_eq!(tail.iter().map(|e| e.bytes).collect::<Vec<_>>(), [1003, 1004]);
        assert_eq!(log.tail("shop", None).len(), 1000);
        assert_eq!(log.tail("none", None).len(), 0);
        let first = live.live.try_recv().expect("a live line");
        assert_eq!((&*first.app, first.entry.bytes), ("shop", 0));
    }

    #[test]
    fn a_line_shows_the_path_but_never_the_query() {
        let line = entry(12, "/login?token=secret").to_string();
        assert_eq!(
            line,
            "2026-11-29T12:00:00Z shop.example.com GET /login 200 12 3ms upstream=172.31.0.5:5000 request_id=abc"
        );
        let mut long = entry(0, &format!("/{}", "a".repeat(300)));
        long.upstream = None;
        assert!(long.to_string().contains(&format!(" /{} 200", "a".repeat(255))));
        assert!(long.to_string().contains("upstream=- "));
    }
}
