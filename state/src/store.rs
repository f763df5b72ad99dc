//! The store: etcd-style keys (`/nap/apps/APP/...`) mapped to bytes.
//!
//! One interface, several backends. The embedded backend keeps everything in
//! a SQLite file under the data directory, so the gateway and the git hook
//! processes it spawns see the same state without a daemon in between.

mod embedded;

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use embedded::Embedded;

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
}

/// A handle on nap's state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Embedded(Embedded),
}

impl Store {
    /// Opens (creating if needed) the embedded store at `path`.
    pub fn open_embedded(path: &Path) -> Result<Self, StoreError> {
        Ok(Store { backend: Backend::Embedded(Embedded::open(path)?) })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.get(key)).await,
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.put_many(&[(key, value)])).await,
        }
    }

    /// Writes all pairs or none of them.
    pub async fn put_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.put_many(&pairs)).await,
        }
    }

    /// All pairs whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.list(prefix)).await,
        }
    }

    /// Deletes one key; answers whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.delete(key)).await,
        }
    }

    /// Deletes every key under `prefix`; answers how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.delete_prefix(prefix)).await,
        }
    }

    /// Writes `value` only if `key` currently holds `expected` (`None`: absent).
    /// Answers whether the write happened.
    pub async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Embedded(db) => db.run(|db| db.compare_and_swap(key, expected, value)).await,
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

#[cfg(test)]
mod tests {
    use super::Store;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_embedded(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn get_put_list_delete() {
        let (_dir, store) = store();
        assert_eq!(store.get("/nap/a").await.unwrap(), None);
        store.put("/nap/a", b"1").await.unwrap();
        store.put("/nap/a/b", b"2").await.unwrap();
        store.put("/nap/ab", b"3").await.unwrap();
        store.put("/other", b"4").await.unwrap();
        assert_eq!(store.get("/nap/a").await.unwrap().as_deref(), Some(&b"1"[..]));
        let keys: Vec<String> = store.list("/nap/a/").await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["/nap/a/b"]);
        let keys: Vec<String> = store.list("/nap/").await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["/nap/a", "/nap/a/b", "/nap/ab"]);
        assert!(store.delete("/nap/a").await.unwrap());
        assert!(!store.delete("/nap/a").await.unwrap());
        assert_eq!(store.delete_prefix("/nap/").await.unwrap(), 2);
        assert_eq!(store.list("/").await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn prefixes_are_literal_not_patterns() {
        let (_dir, store) = store();
        store.put("/a_b/x", b"1").await.unwrap();
        store.put("/aXb/x", b"2").await.unwrap();
        store.put("/a%/x", b"3").await.unwrap();
        assert_eq!(store.list("/a_b/").await.unwrap().len(), 1);
        assert_eq!(store.list("/a%").await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compare_and_swap_writes_only_on_match() {
        let (_dir, store) = store();
        assert!(store.compare_and_swap("/k", None, b"1").await.unwrap());
        assert!(!store.compare_and_swap("/k", None, b"2").await.unwrap());
        assert!(!store.compare_and_swap("/k", Some(b"0"), b"2").await.unwrap());
        assert!(store.compare_and_swap("/k", Some(b"1"), b"2").await.unwrap());
        assert_eq!(store.get("/k").await.unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_handles_on_one_file_see_each_other() {
        let (dir, store) = store();
        let other = Store::open_embedded(&dir.path().join("state.db")).unwrap();
        store.put("/shared", b"yes").await.unwrap();
        assert_eq!(other.get("/shared").await.unwrap().as_deref(), Some(&b"yes"[..]));
    }
}
