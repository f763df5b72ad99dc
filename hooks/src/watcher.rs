//! Running template resources: once (`--onetime`), on an interval
//! (`--interval N`), or on every change (the default).
//!
//! A watch starts from the revision its keys were read at, so no change in
//! between is lost. Changes that arrive together (or within `--debounce`)
//! make one render, always of the state after the last of them. When the
//! store goes away, compacts, or restarts, the watcher reads everything
//! again and resumes from there. One resource failing never stops the others
//! or the watch.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::apply::{Applied, Reload};
use crate::resource::{Resource, ResourceError};
use crate::source::{KeyValues, Source, SourceError};

/// How long to wait before reading again after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// `nap watch`'s arguments (the store is nap's global `--store`).
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The template resources (confd's conf.d)
    #[arg(long, value_name = "DIR", default_value = "/etc/nap/conf.d")]
    pub confdir: PathBuf,
    /// The templates [default: templates/ beside the conf.d directory]
    #[arg(long, value_name = "DIR")]
    pub templatedir: Option<PathBuf>,
    /// Render every resource once and exit; non-zero if any failed
    #[arg(long, conflicts_with = "interval")]
    pub onetime: bool,
    /// Render every N seconds instead of watching
    #[arg(long, value_name = "SECS")]
    pub interval: Option<u64>,
    /// After a change, wait this long for more before rendering (0: render at once)
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub debounce: u64,
    /// Seconds check_cmd and reload_cmd may run
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub reload_timeout: u64,
    /// Read keys from the environment (confd's env backend) instead of the store
    #[arg(long)]
    pub env: bool,
    /// Be an image's entrypoint: render, then run COMMAND as a child (signals
    /// forwarded, zombies reaped), re-render on changes, exit with its status
    #[arg(long, requires = "command")]
    pub exec: bool,
    /// The app to run with --exec: `--exec -- CMD ARGS...`
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl WatchArgs {
    pub fn template_dir(&self) -> PathBuf {
        self.templatedir.clone().unwrap_or_else(|| match self.confdir.parent() {
            Some(parent) => parent.join("templates"),
            None => PathBuf::from("templates"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{failed} of {total} template resources failed")]
    Failed { failed: usize, total: usize },
    #[error("no template resources (*.toml) in {0}")]
    Empty(String),
}

pub struct Watcher {
    resources: Vec<Resource>,
    source: Source,
    /// Every prefix some resource reads, each once.
    prefixes: Vec<String>,
    debounce: Duration,
    reload_timeout: Duration,
}

impl Watcher {
    pub fn new(resources: Vec<Resource>, source: Source, debounce: Duration, reload_timeout: Duration) -> Self {
        let all: BTreeSet<String> = resources.iter().flat_map(|r| r.watched.iter().cloned()).collect();
        // No prefix inside another: each key then comes from one watch, in
        // order, and the changes can be applied as they come.
        let mut prefixes: Vec<String> = Vec::new();
        for prefix in all {
            if !prefixes.last().is_some_and(|kept| prefix.starts_with(kept.as_str())) {
                prefixes.push(prefix);
            }
        }
        Watcher { resources, source, prefixes, debounce, reload_timeout }
    }

    /// The resources of `args.confdir`, reading from `source`.
    pub fn from_args(args: &WatchArgs, source: Source) -> Result<Self, WatchError> {
        let resources = Resource::load_dir(&args.confdir, &args.template_dir())?;
        if resources.is_empty() {
            return Err(WatchError::Empty(args.confdir.display().to_string()));
        }
        let source = if args.env { Source::Env } else { source };
        Ok(Watcher::new(
            resources,
            source,
            Duration::from_millis(args.debounce),
            Duration::from_secs(args.reload_timeout),
        ))
    }

    /// Runs as `args` asks until `shutdown` (or once, with `--onetime`).
    pub async fn run(&self, args: &WatchArgs, shutdown: CancellationToken) -> Result<(), WatchError> {
        self.clear_stale().await?;
        match (args.onetime, args.interval) {
            (true, _) => self.once().await,
            (false, Some(secs)) => {
                self.every(Duration::from_secs(secs.max(1)), shutdown).await;
                Ok(())
            }
            (false, None) if !self.source.is_watchable() => {
                // The environment cannot change under a running process.
                self.once().await?;
                shutdown.cancelled().await;
                Ok(())
            }
            (false, None) => {
                self.watch(shutdown).await;
                Ok(())
            }
        }
    }

    /// Deletes the keys of resources marked `clear_on_start`: requests left
    /// from before this start are stale, as the original flow's start
    /// script had it.
    pub(crate) async fn clear_stale(&self) -> Result<(), SourceError> {
        for resource in self.resources.iter().filter(|r| r.settings.clear_on_start) {
            for prefix in &resource.watched {
                let cleared = self.source.clear(prefix).await?;
                if cleared > 0 {
                    info!(resource = %resource.name, %prefix, cleared, "cleared stale keys");
                }
            }
        }
        Ok(())
    }

    /// Whether changes can be watched (the store can; the environment cannot).
    pub fn is_watchable(&self) -> bool {
        self.source.is_watchable()
    }

    /// Renders and applies every resource once.
    pub async fn once(&self) -> Result<(), WatchError> {
        self.once_with(Reload::Run).await
    }

    /// Renders and applies every resource once, running `reload_cmd` or not.
    pub async fn once_with(&self, reload: Reload) -> Result<(), WatchError> {
        let keys = Arc::new(self.source.read(&self.prefixes).await?);
        let failed = self.process(&keys, reload, |_| true).await;
        match failed {
            0 => Ok(()),
            failed => Err(WatchError::Failed { failed, total: self.resources.len() }),
        }
    }

    async fn every(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.once().await {
                error!("{err}");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Watches until `shutdown`, reading everything again after any
    /// failure of the store.
    pub async fn watch(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(err) = self.watch_once(&shutdown).await {
                warn!("{err}; reading every key again in {} s", RETRY.as_secs());
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }

    /// One read and the watch that follows it, until the store fails or
    /// `shutdown`. The read is kept up to date with the watch's changes, so a
    /// change costs no second read.
    async fn watch_once(&self, shutdown: &CancellationToken) -> Result<(), SourceError> {
        let mut state = self.source.read(&self.prefixes).await?;
        let read_at = state.revision;
        // Changes may have been missed before this read: render everything.
        self.process(&Arc::new(state.clone()), Reload::Run, |_| true).await;
        let mut streams = Vec::with_capacity(self.prefixes.len());
        for prefix in &self.prefixes {
            streams.push(self.source.watch(prefix, read_at + 1).await?);
        }
        let mut events = futures_util::stream::select_all(streams);
        info!(revision = read_at, prefixes = ?self.prefixes, "watching");
        let mut changed = BTreeSet::new();
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                batch = events.next() => batch,
            };
            note(batch, read_at, &mut state, &mut changed)?;
            if !self.debounce.is_zero() {
                // Trailing edge: render once the changes stop for `debounce`.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(self.debounce) => break,
                        batch = events.next() => note(batch, read_at, &mut state, &mut changed)?,
                    }
                }
            }
            // Whatever else has arrived goes into the same render.
            while let Some(batch) = events.next().now_or_never() {
                note(batch, read_at, &mut state, &mut changed)?;
            }
            if changed.is_empty() {
                continue;
            }
            let keys = Arc::new(state.clone());
            self.process(&keys, Reload::Run, |resource| changed.iter().any(|key| resource.reads(key))).await;
            changed.clear();
        }
    }

    /// Renders and applies the resources `which` picks; answers how many failed.
    async fn process(&self, keys: &Arc<KeyValues>, reload: Reload, which: impl Fn(&Resource) -> bool) -> usize {
        let mut failed = 0;
        for resource in self.resources.iter().filter(|r| which(r)) {
            let result = match resource.render(Arc::clone(keys)) {
                Ok(content) => resource.apply(&content, reload, self.reload_timeout).await.map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            match result {
                Ok(Applied::Updated) => info!(resource = %resource.name, revision = keys.revision, "rendered"),
                Ok(Applied::Unchanged) => {}
                Err(err) => {
                    error!("{err}");
                    failed += 1;
                }
            }
        }
        failed
    }
}

/// Applies a watch batch to `state` and records the keys it changed,
/// skipping what the read at `read_at` already saw. A failed or ended watch
/// is an error: read everything again.
fn note(
    batch: Option<Result<Vec<nap_state::WatchEvent>, nap_state::StoreError>>,
    read_at: i64,
    state: &mut KeyValues,
    changed: &mut BTreeSet<String>,
) -> Result<(), SourceError> {
    match batch {
        None => Err(SourceError::WatchEnded),
        Some(Err(err)) => Err(err.into()),
        Some(Ok(events)) => {
            for event in events.into_iter().filter(|e| e.revision() > read_at) {
                changed.insert(match &event {
                    nap_state::WatchEvent::Put { key, .. } | nap_state::WatchEvent::Delete { key, .. } => key.clone(),
                });
                state.apply(event);
            }
            Ok(())
        }
    }
}
