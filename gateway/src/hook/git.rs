//! The `pre-receive` script nap installs in each app repo, and the ref
//! updates git hands it.
//!
//! The hook itself is a two-line shell script that calls back into the `nap`
//! binary (`nap hook pre-receive`), so the deploy logic lives in Rust and the
//! script never has to change when nap does.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The branches whose push deploys the app.
pub const DEPLOY_BRANCHES: [&str; 2] = ["master", "main"];

const ZERO_OID: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
#[error("malformed ref update from git: {0:?}")]
pub struct MalformedUpdate(String);

/// One `OLD NEW REFNAME` line of a `pre-receive` hook's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    /// The branch name, for updates of `refs/heads/*`.
    pub fn branch(&self) -> Option<&str> {
        self.refname.strip_prefix("refs/heads/")
    }

    pub fn is_delete(&self) -> bool {
        self.new == ZERO_OID
    }

    /// Whether accepting this update means deploying `new`.
    pub fn deploys(&self) -> bool {
        !self.is_delete() && self.branch().is_some_and(|b| DEPLOY_BRANCHES.contains(&b))
    }
}

/// Parses the lines git writes to `pre-receive`'s standard input.
pub fn parse_ref_updates(input: &str) -> Result<Vec<RefUpdate>, MalformedUpdate> {
    input
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(old), Some(new), Some(refname), None) => {
                    Ok(RefUpdate { old: old.to_owned(), new: new.to_owned(), refname: refname.to_owned() })
                }
                _ => Err(MalformedUpdate(line.to_owned())),
            }
        })
        .collect()
}

/// The `pre-receive` script that hands the push to `nap_exe`.
pub fn pre_receive_script(nap_exe: &Path) -> String {
    format!(
        "#!/bin/sh\n# Installed by nap: the push is deployed by `nap hook pre-receive`.\nexec {} hook pre-receive\n",
        sh_quote(&nap_exe.to_string_lossy())
    )
}

/// Writes the `pre-receive` hook into the bare repo at `repo`, unless it is
/// already there as is. Written to a temporary file and renamed, so git never
/// runs a half-written hook.
pub fn install_pre_receive(repo: &Path, nap_exe: &Path) -> io::Result<()> {
    let hooks = repo.join("hooks");
    let path = hooks.join("pre-receive");
    let script = pre_receive_script(nap_exe);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == script) {
        return Ok(());
    }
    std::fs::create_dir_all(&hooks)?;
    // A name of its own: pushes side by side in one gateway share its pid.
    let mut staged = tempfile::Builder::new().prefix(".pre-receive.").tempfile_in(&hooks)?;
    io::Write::write_all(&mut staged, script.as_bytes())?;
    std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(0o700))?;
    staged.persist(&path).map(drop).map_err(|err| err.error)
}

/// Quotes `word` for a POSIX shell: single quotes, with embedded ones escaped.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_updates_and_tells_which_deploy() {
        let input = format!(
            "{ZERO_OID} 1111111111111111111111111111111111111111 refs/heads/master\n\
             1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/feature\n\
             1111111111111111111111111111111111111111 {ZERO_OID} refs/heads/main\n"
        );
        let updates = parse_ref_updates(&input).unwrap();
        assert_eq!(updates.iter().map(RefUpdate::deploys).collect::<Vec<_>>(), [true, false, false]);
        assert_eq!(updates[1].branch(), Some("feature"));
        assert!(parse_ref_updates("a b\n").is_err());
    }

    #[test]
    fn installs_an_executable_hook_that_quotes_the_binary_path() {
        let repo = tempfile::tempdir().unwrap();
        let exe = Path::new("/opt/it's nap/nap");
        install_pre_receive(repo.path(), exe).unwrap();
        let script = std::fs::read_to_string(repo.path().join("hooks/pre-receive")).unwrap();
        assert!(script.ends_with("exec '/opt/it'\\''s nap/nap' hook pre-receive\n"), "{script}");
        let mode = std::fs::metadata(repo.path().join("hooks/pre-receive")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
