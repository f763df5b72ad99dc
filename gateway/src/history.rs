//! The store's history, kept short: `nap serve` compacts it every
//! `history_retention` seconds, up to the revision it had one period
//! before, as Kubernetes' API server does with its etcd. A value written
//! over or deleted (a config secret, a removed certificate's key, a
//! destroyed app) is gone from the history within two periods; a watch that
//! falls that far behind reads afresh, as every follower in nap does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nap_state::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub async fn compact(store: &Store, retention: Duration, stop: &CancellationToken) {
    // The revision one period ago; 0 before the first.
    let previous = AtomicI64::new(0);
    crate::following::until_stopped(stop, retention, "compacting the store's history failed", || async {
        let now = store.revision().await?;
        let before = previous.swap(now, Ordering::Relaxed);
        if before > 0 {
            store.compact(before).await?;
            debug!(revision = before, "store history compacted");
        }
        Ok::<(), StoreError>(())
    })
    .await;
}
