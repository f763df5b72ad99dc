//! The router's access log, per app, for `logs APP --router`: the last
//! lines of each app, and every new one as it comes. It lives in the
//! process that routes (`nap serve`); the same lines also go to the log
//! through tracing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// Lines kept per app.
const KEPT: usize = 1000;

/// An access-log line of one app.
#[derive(Debug, Clone)]
pub struct Line {
    pub app: Arc<str>,
    pub text: Arc<str>,
}

pub struct AccessLog {
    kept: Mutex<HashMap<Arc<str>, VecDeque<Arc<str>>>>,
    live: broadcast::Sender<Line>,
    routing: AtomicBool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog { kept: Mutex::default(), live: broadcast::channel(1024).0, routing: AtomicBool::new(false) }
    }
}

impl AccessLog {
    fn kept(&self) -> MutexGuard<'_, HashMap<Arc<str>, VecDeque<Arc<str>>>> {
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

    pub fn record(&self, app: &str, text: String) {
        let text: Arc<str> = text.into();
        let app = {
            let mut kept = self.kept();
            let app: Arc<str> = kept.get_key_value(app).map_or_else(|| app.into(), |(key, _)| Arc::clone(key));
            let lines = kept.entry(Arc::clone(&app)).or_default();
            if lines.len() == KEPT {
                lines.pop_front();
            }
            lines.push_back(Arc::clone(&text));
            app
        };
        // Nobody following is fine.
        let _ = self.live.send(Line { app, text });
    }

    /// The app's last `tail` lines (all kept, with `None`).
    pub fn tail(&self, app: &str, tail: Option<usize>) -> Vec<Arc<str>> {
        let kept = self.kept();
        let Some(lines) = kept.get(app) else { return Vec::new() };
        let skip = tail.map_or(0, |tail| lines.len().saturating_sub(tail));
        lines.iter().skip(skip).cloned().collect()
    }

    /// Every line from now on, of every app.
    pub fn follow(&self) -> broadcast::Receiver<Line> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::AccessLog;

    #[test]
    fn keeps_the_last_lines_of_each_app() {
        let log = AccessLog::default();
        let mut live = log.follow();
        for n in 0..1005 {
            log.record("shop", format!("line {n}"));
        }
        log.record("blog", "other".into());
        let tail = log.tail("shop", Some(2));
        assert_eq!(tail.iter().map(|l| &**l).collect::<Vec<_>>(), ["line 1003", "line 1004"]);
        assert_eq!(log.tail("shop", None).len(), 1000);
        assert_eq!(log.tail("none", None).len(), 0);
        let first = live.try_recv().expect("a live line");
        assert_eq!((&*first.app, &*first.text), ("shop", "line 0"));
    }
}
