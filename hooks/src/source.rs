//! Where template resources read keys: the store (etcd, or the embedded
//! one) or the environment, and the key/value snapshot templates see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nap_state::{Store, StoreError, WatchStream};

/// The keys a render sees: absolute key → value, all read at `revision`.
#[derive(Debug, Clone, Default)]
pub struct KeyValues {
    values: BTreeMap<String, String>,
    /// The store revision the values were read at (0 for the environment).
    pub revision: i64,
}

impl KeyValues {
    pub fn new(values: BTreeMap<String, String>, revision: i64) -> Self {
        KeyValues { values, revision }
    }

    /// Applies a change the watch reported after these keys were read.
    pub fn apply(&mut self, event: nap_state::WatchEvent) {
        self.revision = self.revision.max(event.revision());
        match event {
            nap_state::WatchEvent::Put { key, value, .. } => {
                self.values.insert(key, String::from_utf8_lossy(&value).into_owned());
            }
            nap_state::WatchEvent::Delete { key, .. } => {
                self.values.remove(&key);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every (key, value) whose key matches `pattern`.
    pub fn matching<'a>(&'a self, pattern: &'a glob::Pattern) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        self.values
            .iter()
            .filter(move |(key, _)| pattern.matches_with(key, options))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names directly under `dir`: with `dirs_only`, only those that
    /// have keys below them. Sorted, each once.
    pub fn children(&self, dir: &str, dirs_only: bool) -> Vec<String> {
        let base = format!("{}/", dir.trim_end_matches('/'));
        let mut names = BTreeSet::new();
        for key in self.values.range(base.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&base)) {
            let rest = &key[base.len()..];
            match rest.split_once('/') {
                Some((name, _)) if !name.is_empty() => {
                    names.insert(name.to_owned());
                }
                None if !dirs_only && !rest.is_empty() => {
                    names.insert(rest.to_owned());
                }
                _ => {}
            }
        }
        names.into_iter().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the environment cannot be watched; use --onetime or --interval")]
    NotWatchable,
    #[error("the store's watch ended")]
    WatchEnded,
}

/// Where keys come from.
#[derive(Clone)]
pub enum Source {
    Store(Arc<Store>),
    /// confd's env backend: key `/db/host` is variable `DB_HOST`.
    Env,
}

impl Source {
    /// Every key under each of `prefixes`, read at one revision.
    pub async fn read(&self, prefixes: &[String]) -> Result<KeyValues, SourceError> {
        match self {
            Source::Store(store) => {
                let (pairs, revision) = store.snapshot(prefixes).await?;
                let values = pairs.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
                Ok(KeyValues::new(values, revision))
            }
            Source::Env => {
                let values = std::env::vars()
                    .map(|(name, value)| (env_key(&name), value))
                    .filter(|(key, _)| prefixes.iter().any(|p| key.starts_with(p.as_str())))
                    .collect();
                Ok(KeyValues::new(values, 0))
            }
        }
    }

    /// Changes under `prefix` from revision `from` on.
    pub async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, SourceError> {
        match self {
            Source::Store(store) => Ok(store.watch(prefix, from).await?),
            Source::Env => Err(SourceError::NotWatchable),
        }
    }

    /// Deletes every key under `prefix`; answers how many there were.
    pub async fn clear(&self, prefix: &str) -> Result<u64, SourceError> {
        match self {
            Source::Store(store) => Ok(store.delete_prefix(prefix).await?),
            Source::Env => Ok(0),
        }
    }

    pub fn is_watchable(&self) -> bool {
        matches!(self, Source::Store(_))
    }
}

/// confd's mapping of an environment variable to a key: `DB_HOST` → `/db/host`.
fn env_key(name: &str) -> String {
    format!("/{}", name.to_lowercase().replace('_', "/"))
}

/// `prefix` and `key` joined as confd joins them: one `/` between, a
/// leading `/`, no trailing one.
pub fn join_key(prefix: &str, key: &str) -> String {
    let joined: Vec<&str> = prefix.split('/').chain(key.split('/')).filter(|part| !part.is_empty()).collect();
    format!("/{}", joined.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> KeyValues {
        KeyValues::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), 1)
    }

    #[test]
    fn children_and_directories() {
        let kv = kv(&[("/hosts/a/ip", "1"), ("/hosts/a/sid", "1"), ("/hosts/b/ip", "2"), ("/hosts/count", "2")]);
        assert_eq!(kv.children("/hosts", false), ["a", "b", "count"]);
        assert_eq!(kv.children("/hosts/", true), ["a", "b"]);
        assert!(kv.children("/nothing", false).is_empty());
    }

    #[test]
    fn keys_join_like_confd() {
        assert_eq!(join_key("/k8s-deploy/p/rollout", "/dev"), "/k8s-deploy/p/rollout/dev");
        assert_eq!(join_key("", "dev"), "/dev");
        assert_eq!(join_key("/a/", "/"), "/a");
        assert_eq!(env_key("DB_HOST"), "/db/host");
    }
}
