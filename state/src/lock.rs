//! nap's locks: an app's deploy lock, and a host's snapshot lock.
//!
//! With the embedded store a lock is an advisory `flock` on
//! `DATA/locks/NAME.lock`, held by the process that deploys or snapshots. The kernel drops
//! it when that process exits for any reason, `kill -9` included, so it can
//! never go stale. The file's content names the holder, so that a refused
//! push can say which push is running.
//!
//! With etcd, hosts share apps, so the lock is the key `/nap/locks/APP`,
//! bound to a lease the holder keeps alive. A host that dies stops renewing,
//! and the lease expires with the lock. A holder on this host that is gone
//! is not waited for: its lease is revoked at once. Gone means its pid is
//! dead, or it is this very process (`nap serve` runs commands itself) and
//! none of its live locks holds that lease, as after a release that could
//! not reach etcd.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::{Store, StoreError, layout};

/// What a lock keeps to one holder at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSubject<'a> {
    /// Every change of an app's releases (push, config, rollback, destroy).
    Deploy { app: &'a str },
    /// `commit` on the host with this IP: a second one would freeze the
    /// containers the first is snapshotting and thaw them under it.
    Snapshot { host_ip: &'a str },
    /// An ACME order for an app's certificates: one host orders at a time,
    /// so several `nap serve` hosts on one etcd do not order twice.
    Certificates { app: &'a str },
}

impl LockSubject<'_> {
    /// The lock's name, under `/nap/locks/` and in the lock directory. An
    /// app name never holds `@`, so no app's lock can be a host's.
    fn name(&self) -> String {
        match self {
            LockSubject::Deploy { app } => (*app).to_owned(),
            LockSubject::Snapshot { host_ip } => format!("snapshot@{host_ip}"),
            LockSubject::Certificates { app } => format!("acme@{app}"),
        }
    }

    /// What a second holder is told is going on.
    fn busy(&self) -> String {
        match self {
            LockSubject::Deploy { app } => format!("{app} is already deploying"),
            LockSubject::Snapshot { host_ip } => format!("a snapshot is already running on {host_ip}"),
            LockSubject::Certificates { app } => format!("certificates of {app} are already being ordered"),
        }
    }
}

impl std::fmt::Display for LockSubject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockSubject::Deploy { app } => write!(f, "deploy lock of {app}"),
            LockSubject::Snapshot { host_ip } => write!(f, "snapshot lock of {host_ip}"),
            LockSubject::Certificates { app } => write!(f, "ACME lock of {app}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{busy} ({holder}); try again when it is done")]
    Busy { busy: String, holder: String },
    #[error("lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the {lock}: its lease ended, and another holder may have it; nothing was made current")]
    Lost { lock: String },
    #[error("{lock}: {source}")]
    Store {
        lock: String,
        #[source]
        source: StoreError,
    },
}

/// How long a shared lock outlives a holder that stopped renewing it.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// The leases of the shared locks this process holds now.
static HELD_HERE: Mutex<BTreeSet<i64>> = Mutex::new(BTreeSet::new());

fn held_here() -> std::sync::MutexGuard<'static, BTreeSet<i64>> {
    // The set stays consistent whatever panicked while holding it.
    HELD_HERE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The revokes of dropped shared locks that are still under way.
static REVOKES: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Held for the lifetime of a deploy or snapshot; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    held: Held,
}

/// Each variant is held for what its drop does: closing the file drops the
/// flock, dropping the guard revokes the lease.
#[derive(Debug)]
#[expect(dead_code, reason = "held for what dropping them does, never read")]
enum Held {
    File { file: File, path: PathBuf },
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
    /// What it locks, as errors name it.
    lock: String,
    lease: i64,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
        held_here().remove(&self.lease);
        let (store, lease) = (self.store.clone(), self.lease);
        // Best effort: if this never runs, the lease expires on its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(REVOKES.track_future(async move {
                let _ = store.revoke_lease(lease).await;
            }));
        }
    }
}

impl Lock {
    /// Takes the lock on `subject` at once, or says who holds it: a `flock`
    /// under `lock_dir` with a host-local store, a leased key with a shared
    /// one, marked as held from `host` (this host's name among nap's hosts).
    pub async fn acquire(
        store: &Store,
        lock_dir: &Path,
        subject: LockSubject<'_>,
        holder: &str,
        host: &str,
    ) -> Result<Lock, LockError> {
        if !store.is_shared() {
            return Self::try_acquire(lock_dir, subject, holder);
        }
        let store_err = |source| LockError::Store { lock: subject.to_string(), source };
        let key = layout::lock(&subject.name());
        for _ in 0..2 {
            let lease = store.grant_lease(LEASE_TTL).await.map_err(store_err)?;
            let value =
                SharedHolder { holder: holder.to_owned(), host: host.to_owned(), pid: std::process::id(), lease };
            let json = serde_json::to_vec(&value).map_err(|e| store_err(StoreError::Encode(e)))?;
            if store.create_with_lease(&key, &json, lease).await.map_err(store_err)? {
                held_here().insert(lease);
                let renew = tokio::spawn({
                    let store = store.clone();
                    async move {
                        // A lease that is gone stays gone; a store that did not
                        // answer may answer the next time, before the TTL.
                        loop {
                            tokio::time::sleep(LEASE_TTL / 3).await;
                            if let Err(StoreError::LeaseNotFound(_)) = store.keep_lease_alive(lease).await {
                                return;
                            }
                        }
                    }
                });
                let guard = LeaseGuard { store: store.clone(), lock: subject.to_string(), lease, renew };
                return Ok(Lock { held: Held::Lease(guard) });
            }
            let _ = store.revoke_lease(lease).await;
            let Some(current) = store.get_json::<SharedHolder>(&key).await.map_err(store_err)? else { continue };
            if current.host == host && holder_gone(&current) {
                // Nothing will renew it or let it go.
                store.revoke_lease(current.lease).await.map_err(store_err)?;
                continue;
            }
            return Err(LockError::Busy {
                busy: subject.busy(),
                holder: format!("{} on {}", current.holder, current.host),
            });
        }
        Err(LockError::Busy { busy: subject.busy(), holder: "another holder".into() })
    }

    /// Waits, for `limit` at most, until the leases of the shared locks
    /// dropped so far are revoked. A process calls it before it exits: its
    /// runtime would drop those revokes, and other hosts would wait for the
    /// leases to expire.
    pub async fn released(limit: Duration) {
        REVOKES.close();
        let _ = tokio::time::timeout(limit, REVOKES.wait()).await;
        REVOKES.reopen();
    }

    /// Whether this holder still holds the lock, checked now: a shared
    /// lock's lease is renewed on the spot, and one the store no longer has
    /// (it expired while renewals failed, or was revoked) is lost. The
    /// release flow asks before it makes anything current. A host-local
    /// lock is held until dropped.
    pub async fn ensure_held(&self) -> Result<(), LockError> {
        let Held::Lease(guard) = &self.held else { return Ok(()) };
        match guard.store.keep_lease_alive(guard.lease).await {
            Ok(()) => Ok(()),
            Err(StoreError::LeaseNotFound(_)) => Err(LockError::Lost { lock: guard.lock.clone() }),
            Err(source) => Err(LockError::Store { lock: guard.lock.clone(), source }),
        }
    }

    /// Releases the lock of something that is gone for good (a destroyed
    /// app), removing its lock file too. Removing a held flock's file is
    /// safe: the next holder makes a new one.
    pub fn forget(self) {
        if let Held::File { path, .. } = &self.held {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Takes the host-local lock on `subject` at once, or says who holds it.
    /// `holder` describes this holder, e.g. "push of 1a2b3c4 by alice, pid 42".
    pub fn try_acquire(lock_dir: &Path, subject: LockSubject<'_>, holder: &str) -> Result<Lock, LockError> {
        let path = lock_dir.join(format!("{}.lock", subject.name()));
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
                    "" => "another holder".to_owned(),
                    text => text.to_owned(),
                };
                return Err(LockError::Busy { busy: subject.busy(), holder });
            }
            Err(TryLockError::Error(source)) => return Err(io_err(source)),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(holder.as_bytes()).map_err(io_err)?;
        Ok(Lock { held: Held::File { file, path } })
    }
}

/// Whether the holder of a lock taken from this host is gone.
fn holder_gone(holder: &SharedHolder) -> bool {
    if holder.pid == std::process::id() {
        return !held_here().contains(&holder.lease);
    }
    !pid_alive(holder.pid)
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // Signal 0 checks existence; EPERM still means it exists.
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: LockSubject = LockSubject::Deploy { app: "hello" };

    #[test]
    fn second_holder_is_refused_with_the_first_named_then_admitted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::try_acquire(dir.path(), HELLO, "push of abc by alice").unwrap();
        let err = Lock::try_acquire(dir.path(), HELLO, "push of def by bob").unwrap_err();
        assert_eq!(err.to_string(), "hello is already deploying (push of abc by alice); try again when it is done");
        Lock::try_acquire(dir.path(), LockSubject::Deploy { app: "other" }, "x").unwrap();
        drop(first);
        Lock::try_acquire(dir.path(), HELLO, "push of def by bob").unwrap();
    }

    #[test]
    fn a_hosts_snapshot_lock_is_not_an_apps_deploy_lock() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = LockSubject::Snapshot { host_ip: "10.0.0.1" };
        let _deploy = Lock::try_acquire(dir.path(), LockSubject::Deploy { app: "snapshot" }, "x").unwrap();
        let _first = Lock::try_acquire(dir.path(), snapshot, "commit by alice, pid 7").unwrap();
        let err = Lock::try_acquire(dir.path(), snapshot, "commit by bob").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a snapshot is already running on 10.0.0.1 (commit by alice, pid 7); try again when it is done"
        );
    }

    #[test]
    fn an_apps_acme_lock_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let acme = LockSubject::Certificates { app: "hello" };
        let _deploy = Lock::try_acquire(dir.path(), HELLO, "push").unwrap();
        let _first = Lock::try_acquire(dir.path(), acme, "ACME order on host-a").unwrap();
        let err = Lock::try_acquire(dir.path(), acme, "ACME order on host-b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificates of hello are already being ordered (ACME order on host-a); try again when it is done"
        );
    }
}
