//! The per-app deploy lock.
//!
//! With the embedded store it is an advisory `flock` on
//! `DATA/locks/APP.lock`, held by the process that deploys. The kernel drops
//! it when that process exits for any reason, `kill -9` included, so it can
//! never go stale. The file's content names the holder, so that a refused
//! push can say which push is running.
//!
//! With etcd, hosts share apps, so the lock is the key `/nap/locks/APP`,
//! bound to a lease the holder keeps alive. A host that dies stops renewing,
//! and the lease expires with the lock. A holder on this host that died
//! (its pid is gone) is not waited for: its lease is revoked at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError, layout};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{app} is already deploying ({holder}); try again when it is done")]
    Busy { app: String, holder: String },
    #[error("deploy lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("deploy lock of {app}: {source}")]
    Store {
        app: String,
        #[source]
        source: crate::StoreError,
    },
}

/// How long a shared lock outlives a holder that stopped renewing it.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// Held for the lifetime of a deploy; dropping it releases the lock.
#[derive(Debug)]
pub struct DeployLock {
    _held: Held,
}

/// Each variant is held for what its drop does: closing the file drops the
/// flock, dropping the guard revokes the lease.
#[derive(Debug)]
#[allow(dead_code)]
enum Held {
    File(File),
    Lease(LeaseGuard),
}

/// What a shared lock's key holds.
#[derive(Debug, Serialize, Deserialize)]
struct SharedHolder {
    holder: String,
    host: String,
    pid: u32,
    lease: i64,
}

/// Keeps a lease alive while held; revokes it when dropped.
#[derive(Debug)]
struct LeaseGuard {
    store: Store,
    lease: i64,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
        let (store, lease) = (self.store.clone(), self.lease);
        // Best effort: if this never runs, the lease expires on its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.revoke_lease(lease).await;
            });
        }
    }
}

impl DeployLock {
    /// Takes the lock for `app` at once, or says who holds it: a `flock`
    /// under `lock_dir` with a host-local store, a leased key with a shared
    /// one, marked as held from `host` (this host's name among nap's hosts).
    pub async fn acquire(
        store: &Store,
        lock_dir: &Path,
        app: &str,
        holder: &str,
        host: &str,
    ) -> Result<DeployLock, LockError> {
        if !store.is_shared() {
            return Self::try_acquire(lock_dir, app, holder);
        }
        let store_err = |source| LockError::Store { app: app.to_owned(), source };
        let key = layout::deploy_lock(app);
        for _ in 0..2 {
            let lease = store.grant_lease(LEASE_TTL).await.map_err(store_err)?;
            let value =
                SharedHolder { holder: holder.to_owned(), host: host.to_owned(), pid: std::process::id(), lease };
            let json = serde_json::to_vec(&value).map_err(|e| store_err(StoreError::Encode(e)))?;
            if store.create_with_lease(&key, &json, lease).await.map_err(store_err)? {
                let renew = tokio::spawn({
                    let store = store.clone();
                    async move {
                        loop {
                            tokio::time::sleep(LEASE_TTL / 3).await;
                            if store.keep_lease_alive(lease).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                return Ok(DeployLock { _held: Held::Lease(LeaseGuard { store: store.clone(), lease, renew }) });
            }
            let _ = store.revoke_lease(lease).await;
            let Some(current) = store.get_json::<SharedHolder>(&key).await.map_err(store_err)? else { continue };
            if current.host == host && !pid_alive(current.pid) {
                // Its holder died on this host; nothing will renew it.
                store.revoke_lease(current.lease).await.map_err(store_err)?;
                continue;
            }
            return Err(LockError::Busy {
                app: app.to_owned(),
                holder: format!("{} on {}", current.holder, current.host),
            });
        }
        Err(LockError::Busy { app: app.to_owned(), holder: "another push".into() })
    }

    /// Takes the lock for `app` at once, or says who holds it.
    /// `holder` describes this deploy, e.g. "push of 1a2b3c4 by alice, pid 42".
    pub fn try_acquire(lock_dir: &Path, app: &str, holder: &str) -> Result<DeployLock, LockError> {
        let path = lock_dir.join(format!("{app}.lock"));
        let io_err = |source| LockError::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(lock_dir).map_err(io_err)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut current = String::new();
                // The holder writes its description right after locking; an
                // empty read only means we looked in between.
                let _ = file.read_to_string(&mut current);
                let holder = match current.trim() {
                    "" => "another push".to_owned(),
                    text => text.to_owned(),
                };
                return Err(LockError::Busy { app: app.to_owned(), holder });
            }
            Err(TryLockError::Error(source)) => return Err(io_err(source)),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(holder.as_bytes()).map_err(io_err)?;
        Ok(DeployLock { _held: Held::File(file) })
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // Signal 0 checks existence; EPERM still means it exists.
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named_then_admitted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = DeployLock::try_acquire(dir.path(), "hello", "push of abc by alice").unwrap();
        let err = DeployLock::try_acquire(dir.path(), "hello", "push of def by bob").unwrap_err();
        assert_eq!(err.to_string(), "hello is already deploying (push of abc by alice); try again when it is done");
        DeployLock::try_acquire(dir.path(), "other", "x").unwrap();
        drop(first);
        DeployLock::try_acquire(dir.path(), "hello", "push of def by bob").unwrap();
    }
}
