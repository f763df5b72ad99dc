//! App repos: bare git repos at `DATA/repos/APP.git`, created on first push.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::app_name::AppName;

pub fn path(repos_dir: &Path, app: &AppName) -> PathBuf {
    repos_dir.join(format!("{app}.git"))
}

/// A push's hold on its app's repo. While any push holds it (a shared
/// `flock` on `DATA/locks/repo@APP.lock`), the repo is never removed, so a
/// refused push cannot take away the repo that another push is writing to.
pub struct Hold {
    pub repo: PathBuf,
    /// Whether this push made the repo.
    created: bool,
    lock: File,
}

impl Hold {
    /// Opens the app's repo for a push, creating it if this is the first.
    /// The repo is made under a name of its own and renamed into place, so
    /// no one ever sees a half-made repo.
    pub fn open(repos_dir: &Path, locks_dir: &Path, app: &AppName, nap_exe: &Path) -> io::Result<Hold> {
        std::fs::create_dir_all(locks_dir)?;
        let lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(locks_dir.join(format!("repo@{app}.lock")))?;
        // Waits only while a push that just ended removes an empty repo.
        lock.lock_shared()?;
        let repo = path(repos_dir, app);
        let mut created = false;
        if !repo.exists() {
            std::fs::create_dir_all(repos_dir)?;
            let staged = tempfile::Builder::new().prefix(&format!(".new-{app}-")).tempdir_in(repos_dir)?;
            let made = staged.path().join("repo.git");
            git2::Repository::init_opts(&made, git2::RepositoryInitOptions::new().bare(true).mkdir(true))
                .map_err(io::Error::other)?;
            match std::fs::rename(&made, &repo) {
                Ok(()) => created = true,
                // Another push created it first; use theirs.
                Err(_) if repo.exists() => {}
                Err(err) => return Err(err),
            }
        }
        crate::hook::git::install_pre_receive(&repo, nap_exe)?;
        Ok(Hold { repo, created, lock })
    }

    /// Lets go of the repo. A repo this push made is removed again if it
    /// holds no refs (the push was refused) and no other push holds it.
    /// Answers whether it was removed.
    pub fn close(self) -> io::Result<bool> {
        self.lock.unlock()?;
        if !self.created || self.lock.try_lock().is_err() {
            return Ok(false);
        }
        let empty = match git2::Repository::open_bare(&self.repo) {
            Ok(r) => r.references().is_ok_and(|mut refs| refs.next().is_none()),
            Err(_) => false,
        };
        if empty {
            std::fs::remove_dir_all(&self.repo)?;
        }
        Ok(empty)
    }
}
