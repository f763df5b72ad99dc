//! The store: etcd-style keys (`/nap/apps/APP/...`) mapped to bytes.
//!
//! One interface, several backends. The embedded backend keeps everything in
//! a SQLite file under the data directory, so the gateway and the git hook
//! processes it spawns see the same state without a daemon in between.

mod embedded;
mod etcd;

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use embedded::Embedded;
use etcd::Etcd;
pub use etcd::EtcdOptions;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store {path}: {source}")]
    Embedded {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("embedded store {path}: cannot make it private to its owner: {source}")]
    Permissions {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not encode a value for the store: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("value at {key} is not what nap expects: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the embedded store's lock was poisoned by a panic")]
    Poisoned,
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {seconds} s")]
    EtcdTimeout { endpoints: String, seconds: u64 },
    #[error("etcd at {endpoints}: reading {}: {source}", path.display())]
    EtcdPem {
        endpoints: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoints}: watch canceled: {reason}")]
    WatchCanceled { endpoints: String, reason: String },
    #[error("cannot create the data directory {}: {source}", dir.display())]
    DataDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid store {0:?}: use etcd://HOST:PORT[,HOST:PORT...]")]
    InvalidSpec(String),
    #[error("lease {0} does not exist (it expired or was revoked)")]
    LeaseNotFound(i64),
    #[error("revision {0} and older were compacted; read again and watch from now")]
    Compacted(i64),
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: Vec<u8>, revision: i64 },
    Delete { key: String, revision: i64 },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { revision, .. } | WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Batches of changes, in revision order.
/// Keys and their values, in key order.
pub type Pairs = Vec<(String, Vec<u8>)>;

pub type WatchStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Vec<WatchEvent>, StoreError>> + Send>>;

/// How often the embedded backend looks for changes to report to watches.
const EMBEDDED_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// A handle on nap's state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Embedded(_) => "Store(embedded)",
            Backend::Etcd(_) => "Store(etcd)",
        })
    }
}

#[derive(Clone)]
enum Backend {
    Embedded(Embedded),
    Etcd(Box<Etcd>),
}

impl Store {
    /// Opens (creating if needed) the embedded store at `path`.
    pub fn open_embedded(path: &Path) -> Result<Self, StoreError> {
        Ok(Store { backend: Backend::Embedded(Embedded::open(path)?) })
    }

    /// Whether other hosts share this store (etcd), rather than this host alone.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Etcd(_))
    }

    /// Connects to an etcd cluster; fails within a bounded time if no
    /// endpoint answers.
    pub async fn open_etcd(options: &EtcdOptions) -> Result<Self, StoreError> {
        Ok(Store { backend: Backend::Etcd(Box::new(Etcd::connect(options).await?)) })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.get(key)).await,
            Backend::Etcd(etcd) => etcd.get(key).await,
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.put_many(&[(key, value)], None)).await,
            Backend::Etcd(etcd) => etcd.write_many(&[(key, value)], &[], None).await,
        }
    }

    /// Writes all pairs or none of them.
    pub async fn put_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.write_many(pairs, &[], None).await
    }

    /// Puts `pairs` and deletes the keys `deletes`, all or nothing, at one
    /// revision: a watcher sees the whole change or none of it. With a
    /// lease, the pairs go when it expires.
    pub async fn write_many(
        &self,
        pairs: &[(String, Vec<u8>)],
        deletes: &[String],
        lease: Option<i64>,
    ) -> Result<(), StoreError> {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let deletes: Vec<&str> = deletes.iter().map(String::as_str).collect();
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.write_many(&pairs, &deletes, lease)).await,
            Backend::Etcd(etcd) => etcd.write_many(&pairs, &deletes, lease).await,
        }
    }

    /// All pairs whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.list(prefix)).await,
            Backend::Etcd(etcd) => etcd.list(prefix).await,
        }
    }

    /// Deletes one key; answers whether it existed.
    /// Every key under each of `prefixes`, all read at one revision, and that
    /// revision: a watch from the next one misses nothing written after it.
    pub async fn snapshot(&self, prefixes: &[String]) -> Result<(Pairs, i64), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.snapshot(prefixes)).await,
            Backend::Etcd(etcd) => etcd.snapshot(prefixes).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.delete(key)).await,
            Backend::Etcd(etcd) => etcd.delete(key).await,
        }
    }

    /// Deletes every key under `prefix`; answers how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.delete_prefix(prefix)).await,
            Backend::Etcd(etcd) => etcd.delete_prefix(prefix).await,
        }
    }

    /// Writes `value` only if `key` currently holds `expected` (`None`: absent).
    /// Answers whether the write happened.
    pub async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.compare_and_swap(key, expected, value, None)).await,
            Backend::Etcd(etcd) => etcd.compare_and_swap(key, expected, value, None).await,
        }
    }

    /// Creates `key` bound to `lease` unless it exists; answers whether it did.
    /// The key disappears when the lease expires or is revoked.
    pub async fn create_with_lease(&self, key: &str, value: &[u8], lease: i64) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.compare_and_swap(key, None, value, Some(lease))).await,
            Backend::Etcd(etcd) => etcd.compare_and_swap(key, None, value, Some(lease)).await,
        }
    }

    /// A lease that lives `ttl` (whole seconds, at least 1) unless kept alive.
    pub async fn grant_lease(&self, ttl: std::time::Duration) -> Result<i64, StoreError> {
        let ttl = std::time::Duration::from_secs(ttl.as_secs().max(1));
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.grant_lease(ttl)).await,
            Backend::Etcd(etcd) => etcd.grant_lease(ttl).await,
        }
    }

    /// Renews `lease` for its whole TTL; fails if it already expired.
    pub async fn keep_lease_alive(&self, lease: i64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.keep_lease_alive(lease)).await,
            Backend::Etcd(etcd) => etcd.keep_lease_alive(lease).await,
        }
    }

    /// Ends `lease` now, deleting its keys.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.revoke_lease(lease)).await,
            Backend::Etcd(etcd) => etcd.revoke_lease(lease).await,
        }
    }

    /// The store's current revision: a watch from `revision() + 1` misses nothing after now.
    /// Forgets the history of every key up to `revision`, so that values
    /// written over or deleted before it (a config secret, a removed
    /// certificate's key) can no longer be read back; watches from an older
    /// revision get [`StoreError::Compacted`] and read afresh. Compacting
    /// less far than before does nothing.
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(move |db: &mut embedded::Db<'_>| db.compact(revision)).await,
            Backend::Etcd(etcd) => etcd.compact(revision).await,
        }
    }

    pub async fn revision(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db: &mut embedded::Db<'_>| db.revision()).await,
            Backend::Etcd(etcd) => etcd.revision().await,
        }
    }

    /// Changes under `prefix` from revision `from` on, including those made
    /// before the call, as etcd's watch does.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, StoreError> {
        let db = match &self.backend {
            Backend::Etcd(etcd) => return etcd.watch(prefix, from).await,
            Backend::Embedded(db) => db.clone(),
        };
        let prefix = prefix.to_owned();
        let stream = futures_util::stream::unfold(Some(from), move |next| {
            let (db, prefix) = (db.clone(), prefix.clone());
            async move {
                let mut next = next?;
                loop {
                    match db.run(|db| db.events_since(&prefix, next)).await {
                        Ok(events) if events.is_empty() => tokio::time::sleep(EMBEDDED_WATCH_INTERVAL).await,
                        Ok(events) => {
                            next = events.last().map_or(next, |e| e.revision() + 1);
                            return Some((Ok(events), Some(next)));
                        }
                        // An error ends the watch, as a compaction does in etcd.
                        Err(err) => return Some((Err(err), None)),
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(key).await?.map(|bytes| decode(key, &bytes)).transpose()
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Encode)?;
        self.put(key, &bytes).await
    }

    pub async fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StoreError> {
        self.list(prefix).await?.iter().map(|(key, bytes)| decode(key, bytes)).collect()
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { key: key.to_owned(), source })
}
