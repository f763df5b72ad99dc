//! The files at the root of a pushed tree that say how the app runs,
//! besides its Dockerfile: `Procfile` (its process types) and `app.json`
//! (its formation and health checks). Read from the git object store, as
//! the build context is, and bounded in size.

use std::path::Path;

use crate::context::open_repo;
use crate::image::{BuildError, commit_tree, short_commit};

/// The most bytes of a Procfile nap reads.
const MAX_PROCFILE: usize = 64 * 1024;
/// The most bytes of an app.json nap reads.
const MAX_APP_JSON: usize = nap_runner::MAX_APP_JSON;

/// The texts of a commit's `Procfile` and `app.json`, where it has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFiles {
    pub procfile: Option<String>,
    pub app_json: Option<String>,
}

/// Reads `Procfile` and `app.json` from the root of `commit`'s tree.
pub fn app_files(repo: &Path, commit: &str) -> Result<AppFiles, BuildError> {
    let git_err = |source| BuildError::Git { commit: commit.to_owned(), source };
    let repo = open_repo(repo).map_err(git_err)?;
    let tree = commit_tree(&repo, commit).map_err(git_err)?;
    let read = |name: &'static str, limit: usize| -> Result<Option<String>, BuildError> {
        let Some(entry) = tree.get_name(name) else { return Ok(None) };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return Ok(None);
        }
        let (length, _) = repo.odb().and_then(|odb| odb.read_header(entry.id())).map_err(git_err)?;
        if length > limit {
            return Err(BuildError::HugeFile { file: name, commit: short_commit(commit).to_owned(), limit });
        }
        let blob = repo.find_blob(entry.id()).map_err(git_err)?;
        let text = std::str::from_utf8(blob.content())
            .map_err(|_| BuildError::NotText { file: name, commit: short_commit(commit).to_owned() })?;
        Ok(Some(text.to_owned()))
    };
    Ok(AppFiles { procfile: read("Procfile", MAX_PROCFILE)?, app_json: read("app.json", MAX_APP_JSON)? })
}
