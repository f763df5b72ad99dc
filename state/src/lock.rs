//! The per-app deploy lock.
//!
//! It is an advisory `flock` on `DATA/locks/APP.lock`, held by the process
//! that deploys. The kernel drops it when that process exits for any reason,
//! `kill -9` included, so it can never go stale. The file's content names the
//! holder, so that a refused push can say which push is running.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

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
}

/// Held for the lifetime of a deploy; dropping it releases the lock.
#[derive(Debug)]
pub struct DeployLock {
    _file: File,
}

impl DeployLock {
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
        Ok(DeployLock { _file: file })
    }
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
