//! Deploy locks on a shared store: a real etcd (`NAP_TEST_ETCD`, default
//! 127.0.0.1:2379). Each test locks an app name of its own.

use std::time::{Duration, Instant};

use nap_state::{EtcdOptions, Lock, LockError, LockSubject, Store, layout};

async fn etcd() -> Store {
    let endpoint = std::env::var("NAP_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into());
    Store::open_etcd(&EtcdOptions::from_url(&format!("etcd://{endpoint}")).unwrap()).await.unwrap()
}

fn app() -> String {
    format!("lock-{:08x}", rand::random::<u32>())
}

async fn acquire(store: &Store, app: &str, holder: &str) -> Result<Lock, LockError> {
    // The lock directory is only for host-local stores.
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    Lock::acquire(store, std::path::Path::new("/nonexistent"), LockSubject::Deploy { app }, holder, &host).await
}

async fn eventually_acquire(store: &Store, app: &str, within: Duration) -> Lock {
    let deadline = Instant::now() + within;
    loop {
        match acquire(store, app, "the next push").await {
            Ok(lock) => return lock,
            Err(err) => assert!(Instant::now() < deadline, "still locked after {within:?}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes a lock as another holder would, with a lease of `ttl` nobody renews.
async fn foreign_lock(store: &Store, app: &str, host: &str, pid: u32, ttl: Duration) {
    let lease = store.grant_lease(ttl).await.unwrap();
    let value = serde_json::json!({ "holder": "push of abc by bob", "host": host, "pid": pid, "lease": lease });
    assert!(store.create_with_lease(&layout::lock(app), value.to_string().as_bytes(), lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_released_on_drop() {
    let store = etcd().await;
    let app = app();
    let first = acquire(&store, &app, "push of 1234567 by alice").await.unwrap();
    let err = acquire(&store, &app, "push of 89abcde by bob").await.expect_err("second holder admitted");
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    assert_eq!(
        err.to_string(),
        format!("{app} is already deploying (push of 1234567 by alice on {host}); try again when it is done")
    );
    drop(first);
    let _next = eventually_acquire(&store, &app, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_past_its_ttl_is_kept_alive() {
    let store = etcd().await;
    let app = app();
    let _held = acquire(&store, &app, "a long build").await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(acquire(&store, &app, "another").await.is_err(), "the lease lapsed while held");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_holder_on_this_host_is_not_waited_for() {
    let store = etcd().await;
    let app = app();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    // A pid that no process has (above the kernel's pid_max).
    foreign_lock(&store, &app, &host, 4_999_999, Duration::from_secs(60)).await;
    acquire(&store, &app, "the next push").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_this_process_let_go_of_but_could_not_revoke_is_not_waited_for() {
    // As `nap serve` leaves one when etcd is down as a command ends: its own
    // pid, alive, but none of its locks holds the lease.
    let store = etcd().await;
    let app = app();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    foreign_lock(&store, &app, &host, std::process::id(), Duration::from_secs(60)).await;
    let held = acquire(&store, &app, "the next push").await.expect("a leftover of this process is taken over");
    // One this process does hold is not.
    let err = acquire(&store, &app, "a second push").await.expect_err("admitted while held here");
    assert!(err.to_string().contains("(the next push on "), "{err}");
    drop(held);
    Lock::released(Duration::from_secs(5)).await;
    acquire(&store, &app, "after release").await.expect("released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_host_releases_its_lock_when_the_lease_expires() {
    let store = etcd().await;
    let app = app();
    foreign_lock(&store, &app, "a-host-that-died", 1, Duration::from_secs(2)).await;
    let err = acquire(&store, &app, "the next push").await.expect_err("admitted while held");
    assert!(err.to_string().contains("(push of abc by bob on a-host-that-died)"), "{err}");
    let _lock = eventually_acquire(&store, &app, Duration::from_secs(10)).await;
}
