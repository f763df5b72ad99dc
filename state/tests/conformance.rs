//! One conformance suite, run against every store backend: the embedded
//! `SQLite` store, and a real `etcd` (`NAP_TEST_ETCD`, default 127.0.0.1:2379,
//! started by `scripts/services.sh`). Each test works under a prefix of its
//! own, so tests share one etcd safely.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nap_state::{EtcdOptions, Store, WatchEvent};

struct Backend {
    store: Store,
    /// Every key a test uses starts with this.
    root: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }
}

fn root() -> String {
    format!("/conformance-{:08x}/", rand::random::<u32>())
}

fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_embedded(&dir.path().join("state.db")).unwrap();
    Backend { store, root: root(), _dir: Some(dir) }
}

async fn etcd() -> Backend {
    let endpoint = std::env::var("NAP_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into());
    let options = EtcdOptions::from_url(&format!("etcd://{endpoint}")).unwrap();
    let store =
        Store::open_etcd(&options).await.unwrap_or_else(|e| panic!("{e} (start etcd with scripts/services.sh)"));
    Backend { store, root: root(), _dir: None }
}

async fn next_batch(watch: &mut nap_state::WatchStream) -> Vec<WatchEvent> {
    let batch = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("no event within 10 s");
    batch.expect("the watch ended").expect("the watch failed")
}

/// Defines `NAME::embedded` and `NAME::etcd` from one async body.
macro_rules! conformance {
    ($name:ident, |$backend:ident| $body:block) => {
        mod $name {
            use super::*;

            async fn check($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread")]
            async fn embedded() {
                check(super::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn etcd() {
                check(super::etcd().await).await;
            }
        }
    };
}

conformance!(get_put_list_delete, |b| {
    let s = &b.store;
    assert_eq!(s.get(&b.key("a")).await.unwrap(), None);
    s.put(&b.key("a"), b"1").await.unwrap();
    s.put(&b.key("a/b"), b"2").await.unwrap();
    s.put(&b.key("ab"), b"3").await.unwrap();
    s.put(&b.key("z/other"), b"4").await.unwrap();
    assert_eq!(s.get(&b.key("a")).await.unwrap().as_deref(), Some(&b"1"[..]));
    s.put(&b.key("a"), b"one").await.unwrap();
    assert_eq!(s.get(&b.key("a")).await.unwrap().as_deref(), Some(&b"one"[..]));

    let keys = |pairs: Vec<(String, Vec<u8>)>| pairs.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(s.list(&b.key("a/")).await.unwrap()), [b.key("a/b")]);
    assert_eq!(keys(s.list(&b.key("a")).await.unwrap()), [b.key("a"), b.key("a/b"), b.key("ab")]);

    assert!(s.delete(&b.key("a")).await.unwrap());
    assert!(!s.delete(&b.key("a")).await.unwrap());
    assert_eq!(s.delete_prefix(&b.key("a")).await.unwrap(), 2);
    assert_eq!(keys(s.list(&b.root).await.unwrap()), [b.key("z/other")]);
    s.delete_prefix(&b.root).await.unwrap();
    assert!(s.list(&b.root).await.unwrap().is_empty());
});

conformance!(prefixes_are_literal_not_patterns, |b| {
    let s = &b.store;
    s.put(&b.key("a_b/x"), b"1").await.unwrap();
    s.put(&b.key("aXb/x"), b"2").await.unwrap();
    s.put(&b.key("a%/x"), b"3").await.unwrap();
    assert_eq!(s.list(&b.key("a_b/")).await.unwrap().len(), 1);
    assert_eq!(s.list(&b.key("a%")).await.unwrap().len(), 1);
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(put_many_writes_all_pairs_at_once, |b| {
    let s = &b.store;
    s.put_many(&[(b.key("x"), b"1".to_vec()), (b.key("y"), b"2".to_vec())]).await.unwrap();
    assert_eq!(s.list(&b.root).await.unwrap().len(), 2);
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(write_many_puts_and_deletes_at_one_revision_and_can_lease_its_puts, |b| {
    let s = &b.store;
    s.put_many(&[(b.key("old/ip"), b"1".to_vec()), (b.key("old/port"), b"2".to_vec())]).await.unwrap();
    let from = s.revision().await.unwrap() + 1;
    let mut watch = s.watch(&b.root, from).await.unwrap();
    s.write_many(&[(b.key("new/ip"), b"3".to_vec())], &[b.key("old/ip"), b.key("old/port"), b.key("never")], None)
        .await
        .unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.len(), 3, "one put and two deletes, the missing key not among them: {batch:?}");
    assert!(batch.iter().all(|e| e.revision() == batch[0].revision()), "one revision: {batch:?}");
    let keys: Vec<String> = s.list(&b.root).await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [b.key("new/ip")]);

    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    s.write_many(&[(b.key("leased"), b"x".to_vec())], &[], Some(lease)).await.unwrap();
    s.write_many(&[(b.key("leased"), b"y".to_vec())], &[], Some(lease)).await.unwrap();
    assert_eq!(s.get(&b.key("leased")).await.unwrap().as_deref(), Some(&b"y"[..]));
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get(&b.key("leased")).await.unwrap(), None, "a leased put goes with its lease");
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(compare_and_swap_writes_only_on_match, |b| {
    let s = &b.store;
    let k = b.key("k");
    assert!(s.compare_and_swap(&k, None, b"1").await.unwrap());
    assert!(!s.compare_and_swap(&k, None, b"2").await.unwrap());
    assert!(!s.compare_and_swap(&k, Some(b"0"), b"2").await.unwrap());
    assert!(s.compare_and_swap(&k, Some(b"1"), b"2").await.unwrap());
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"2"[..]));
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(json_values_round_trip, |b| {
    let s = &b.store;
    s.put_json(&b.key("n"), &vec![1, 2, 3]).await.unwrap();
    assert_eq!(s.get_json::<Vec<u32>>(&b.key("n")).await.unwrap(), Some(vec![1, 2, 3]));
    s.put(&b.key("bad"), b"not json").await.unwrap();
    let err = s.get_json::<Vec<u32>>(&b.key("bad")).await.unwrap_err().to_string();
    assert!(err.starts_with(&format!("value at {} is not what nap expects", b.key("bad"))), "{err}");
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(leased_keys_live_while_kept_alive_and_go_when_the_lease_does, |b| {
    let s = &b.store;
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    assert!(s.create_with_lease(&b.key("lock"), b"me", lease).await.unwrap());
    assert!(!s.create_with_lease(&b.key("lock"), b"you", lease).await.unwrap(), "a held key was taken");
    // Kept alive past its TTL, it stays.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.keep_lease_alive(lease).await.unwrap();
    }
    assert_eq!(s.get(&b.key("lock")).await.unwrap().as_deref(), Some(&b"me"[..]));
    // Left alone, it expires with its key.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get(&b.key("lock")).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the leased key outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(s.keep_lease_alive(lease).await.is_err(), "an expired lease was renewed");
    assert!(s.create_with_lease(&b.key("lock"), b"you", lease).await.is_err(), "an expired lease was used");

    // Revoking ends it at once.
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(s.create_with_lease(&b.key("lock"), b"you", lease).await.unwrap());
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get(&b.key("lock")).await.unwrap(), None);
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(watch_from_a_revision_sees_every_change_in_order, |b| {
    let s = &b.store;
    s.put(&b.key("unwatched"), b"x").await.unwrap();
    let from = s.revision().await.unwrap() + 1;
    s.put(&b.key("w/a"), b"1").await.unwrap();
    s.put(&b.key("w/a"), b"2").await.unwrap();
    s.delete(&b.key("w/a")).await.unwrap();
    s.put(&b.key("other"), b"not under the prefix").await.unwrap();

    let mut watch = s.watch(&b.key("w/"), from).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.extend(next_batch(&mut watch).await);
    }
    // Made after the watch started: seen too.
    s.put(&b.key("w/b"), b"3").await.unwrap();
    while seen.len() < 4 {
        seen.extend(next_batch(&mut watch).await);
    }
    let shape: Vec<(String, Option<Vec<u8>>)> = seen
        .iter()
        .map(|e| match e {
            WatchEvent::Put { key, value, .. } => (key.clone(), Some(value.clone())),
            WatchEvent::Delete { key, .. } => (key.clone(), None),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (b.key("w/a"), Some(b"1".to_vec())),
            (b.key("w/a"), Some(b"2".to_vec())),
            (b.key("w/a"), None),
            (b.key("w/b"), Some(b"3".to_vec())),
        ]
    );
    let revisions: Vec<i64> = seen.iter().map(WatchEvent::revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert!(revisions[0] >= from);
    s.delete_prefix(&b.root).await.unwrap();
});

conformance!(a_snapshot_reads_several_prefixes_at_one_revision_a_watch_resumes_from, |b| {
    let s = &b.store;
    s.put(&b.key("a/1"), b"one").await.unwrap();
    s.put(&b.key("b/2"), b"two").await.unwrap();
    s.put(&b.key("c/3"), b"not asked for").await.unwrap();
    let (pairs, revision) = s.snapshot(&[b.key("a/"), b.key("b/")]).await.unwrap();
    assert_eq!(pairs, vec![(b.key("a/1"), b"one".to_vec()), (b.key("b/2"), b"two".to_vec())]);
    assert_eq!(revision, s.revision().await.unwrap());
    s.put(&b.key("a/1"), b"changed").await.unwrap();
    let mut watch = s.watch(&b.key("a/"), revision + 1).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert!(matches!(&batch[0], WatchEvent::Put { value, .. } if value == b"changed"), "{batch:?}");
});

conformance!(an_expiring_lease_is_seen_by_a_watch, |b| {
    let s = &b.store;
    let from = s.revision().await.unwrap() + 1;
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    s.create_with_lease(&b.key("lock"), b"me", lease).await.unwrap();
    let mut watch = s.watch(&b.root, from).await.unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, WatchEvent::Delete { .. })) {
        seen.extend(next_batch(&mut watch).await);
    }
    s.delete_prefix(&b.root).await.unwrap();
});

#[tokio::test(flavor = "multi_thread")]
async fn two_embedded_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let one = Store::open_embedded(&dir.path().join("state.db")).unwrap();
    let two = Store::open_embedded(&dir.path().join("state.db")).unwrap();
    one.put("/shared", b"yes").await.unwrap();
    assert_eq!(two.get("/shared").await.unwrap().as_deref(), Some(&b"yes"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_is_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open_embedded(&path).unwrap();
    store.put("/secret", b"key").await.unwrap();
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_etcd_fails_in_bounded_time_naming_the_endpoint() {
    // Nothing listens on port 1.
    let options = EtcdOptions::from_url("etcd://127.0.0.1:1").unwrap();
    let started = Instant::now();
    let err = Store::open_etcd(&options).await.expect_err("connected to nothing").to_string();
    assert!(err.starts_with("etcd at 127.0.0.1:1: "), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[test]
fn store_urls_are_checked() {
    assert_eq!(EtcdOptions::from_url("etcd://a:1,b:2").unwrap().endpoints, ["a:1", "b:2"]);
    for bad in ["a:1", "etcd://", "etcd://host", "etcd://a:1/x", "http://a:1"] {
        assert!(EtcdOptions::from_url(bad).is_err(), "{bad}");
    }
}

/// Compaction is global, so it is not run on the shared etcd here; the
/// end-to-end test `secrets.rs` compacts a private etcd.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_forgets_the_history_and_a_watch_from_before_it_is_told() {
    let b = embedded();
    let s = &b.store;
    let from = s.revision().await.unwrap() + 1;
    s.put(&b.key("secret"), b"old").await.unwrap();
    s.put(&b.key("secret"), b"new").await.unwrap();
    let now = s.revision().await.unwrap();
    s.compact(now).await.unwrap();
    let mut watch = s.watch(&b.root, from).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("an answer");
    assert!(matches!(first, Some(Err(nap_state::StoreError::Compacted(r))) if r == now + 1), "{first:?}");
    // From after it, the watch goes on as before; the value is the new one.
    s.put(&b.key("secret"), b"newer").await.unwrap();
    let mut watch = s.watch(&b.root, now + 1).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert!(matches!(&batch[0], WatchEvent::Put { value, .. } if value == b"newer"), "{batch:?}");
    assert_eq!(s.get(&b.key("secret")).await.unwrap().as_deref(), Some(&b"newer"[..]));
}
