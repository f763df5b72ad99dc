//! SSH keys made with the real `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Key {
    _dir: TempDir,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl Key {
    pub fn generate() -> Key {
        let dir = tempfile::tempdir().expect("temp dir");
        let private = dir.path().join("id_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "nap-test", "-f"])
            .arg(&private)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        Key { public: private.with_extension("pub"), private, _dir: dir }
    }

    pub fn public_text(&self) -> String {
        std::fs::read_to_string(&self.public).expect("read public key")
    }

    /// The `ssh` command line git should use with this key (GIT_SSH_COMMAND).
    pub fn ssh_command(&self) -> String {
        format!("ssh {}", ssh_options(&self.private).join(" "))
    }
}

/// Options for a non-interactive `ssh` that trusts any host key.
pub fn ssh_options(identity: &Path) -> Vec<String> {
    [
        "-i",
        &identity.display().to_string(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}
