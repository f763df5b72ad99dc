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
    #[error("could not encode a value for the store: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("value at {key} is not what nap expects: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store task failed: {0}")]
    Task(String),
    #[error("etcd at {endpoints}: {message}")]
    Etcd { endpoints: String, message: String },
    #[error("invalid store {0:?}: use etcd://HOST:PORT[,HOST:PORT...]")]
    InvalidSpec(String),
}

/// A handle on nap's state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
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
            Backend::Embedded(db) => db.run(|db| db.put_many(&[(key, value)])).await,
            Backend::Etcd(etcd) => etcd.put_many(&[(key, value)]).await,
        }
    }

    /// Writes all pairs or none of them.
    pub async fn put_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.put_many(&pairs)).await,
            Backend::Etcd(etcd) => etcd.put_many(&pairs).await,
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
            Backend::Embedded(db) => db.run(|db| db.compare_and_swap(key, expected, value)).await,
            Backend::Etcd(etcd) => etcd.compare_and_swap(key, expected, value).await,
        }
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
