//! App repos: bare git repos at `DATA/repos/APP.git`, created on first push.

use std::io;
use std::path::{Path, PathBuf};

use crate::app_name::AppName;

pub fn path(repos_dir: &Path, app: &AppName) -> PathBuf {
    repos_dir.join(format!("{app}.git"))
}

/// Opens the app's repo, creating it if this is the first push. Answers
/// whether it was created. The repo is made under a temporary name and renamed
/// into place, so no one ever sees a half-made repo.
pub fn open_or_create(repos_dir: &Path, app: &AppName, nap_exe: &Path) -> io::Result<(PathBuf, bool)> {
    let repo = path(repos_dir, app);
    let mut created = false;
    if !repo.exists() {
        std::fs::create_dir_all(repos_dir)?;
        let staged = repos_dir.join(format!(".new-{app}-{}", std::process::id()));
        let init = git2::Repository::init_opts(&staged, git2::RepositoryInitOptions::new().bare(true).mkdir(true))
            .map_err(io::Error::other);
        let renamed = init.and_then(|_| std::fs::rename(&staged, &repo));
        match renamed {
            Ok(()) => created = true,
            // Another push created it first; use theirs.
            Err(_) if repo.exists() => {}
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(err);
            }
        }
        let _ = std::fs::remove_dir_all(&staged);
    }
    crate::hook::git::install_pre_receive(&repo, nap_exe)?;
    Ok((repo, created))
}

/// Removes a repo that holds no refs: what a refused first push leaves.
pub fn remove_if_empty(repo: &Path) -> io::Result<bool> {
    let empty = match git2::Repository::open_bare(repo) {
        Ok(r) => r.references().is_ok_and(|mut refs| refs.next().is_none()),
        Err(_) => false,
    };
    if empty {
        std::fs::remove_dir_all(repo)?;
    }
    Ok(empty)
}
