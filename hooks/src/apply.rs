//! Applying a rendered resource, in confd's order: stage next to `dest`,
//! skip when nothing changed, check the stage, rename it over `dest`
//! atomically, then reload. `check_cmd` and `reload_cmd` are the operator's
//! own commands from conf.d, run with `sh -c` as confd runs them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use tokio::process::Command;
use tracing::{info, warn};

use crate::resource::Resource;

/// The most output of a failed command shown in its error.
const OUTPUT_LINES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("resource {resource}: {path}: {source}")]
    Io {
        resource: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resource {resource}: check_cmd failed ({status}), {dest} is unchanged: {output}")]
    CheckFailed { resource: String, dest: String, status: String, output: String },
    #[error("resource {resource}: reload_cmd failed ({status}): {output}")]
    ReloadFailed { resource: String, status: String, output: String },
}

/// Whether applying runs `reload_cmd`: not before an entrypoint's app runs,
/// since there is nothing to reload yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Run,
    Skip,
}

/// What applying did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// `dest` already had this content: nothing was checked or reloaded.
    Unchanged,
    /// `dest` was replaced and reloaded.
    Updated,
}

impl Resource {
    /// Puts `content` at `dest` and reloads (unless `reload` is `Skip`),
    /// unless `dest` has it already.
    pub async fn apply(&self, content: &str, reload: Reload, reload_timeout: Duration) -> Result<Applied, ApplyError> {
        let dest = &self.settings.dest;
        let io_err = |path: &Path| {
            let (resource, path) = (self.name.clone(), path.display().to_string());
            move |source| ApplyError::Io { resource, path, source }
        };
        if std::fs::read(dest).is_ok_and(|current| current == content.as_bytes()) {
            return Ok(Applied::Unchanged);
        }
        let stage = Stage::write(dest, content).map_err(io_err(dest))?;
        if let Some(check) = &self.settings.check_cmd {
            let command = check_command(check, stage.path());
            let (ok, status, output) = run(&command, reload_timeout).await;
            if !ok {
                return Err(ApplyError::CheckFailed {
                    resource: self.name.clone(),
                    dest: dest.display().to_string(),
                    status,
                    output,
                });
            }
        }
        self.set_mode_and_owner(stage.path()).map_err(io_err(stage.path()))?;
        stage.replace(dest).map_err(io_err(dest))?;
        info!(resource = %self.name, dest = %dest.display(), "updated");
        if let (Reload::Run, Some(reload_cmd)) = (reload, &self.settings.reload_cmd) {
            let (ok, status, output) = run(reload_cmd, reload_timeout).await;
            if !output.is_empty() {
                info!(resource = %self.name, "reload_cmd: {output}");
            }
            if !ok {
                warn!(resource = %self.name, %status, "reload_cmd failed");
                return Err(ApplyError::ReloadFailed { resource: self.name.clone(), status, output });
            }
        }
        Ok(Applied::Updated)
    }

    fn set_mode_and_owner(&self, path: &Path) -> std::io::Result<()> {
        let settings = &self.settings;
        // Like confd: a new file gets the mode asked for, else dest's current one, else 0644.
        let mode = match settings.mode {
            Some(mode) => mode.bits(),
            None => std::fs::metadata(&settings.dest).map_or(0o644, |m| m.permissions().mode() & 0o7777),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        let uid = match (settings.uid, &settings.owner) {
            (Some(uid), _) => Some(uid),
            (None, Some(owner)) => Some(
                nix::unistd::User::from_name(owner)
                    .ok()
                    .flatten()
                    .ok_or_else(|| std::io::Error::other(format!("no user named {owner:?}")))?
                    .uid
                    .as_raw(),
            ),
            (None, None) => None,
        };
        if uid.is_some() || settings.gid.is_some() {
            std::os::unix::fs::chown(path, uid, settings.gid)?;
        }
        Ok(())
    }
}

/// The staged file next to `dest`; removed again unless it replaced `dest`.
struct Stage {
    path: Option<PathBuf>,
}

impl Stage {
    fn write(dest: &Path, content: &str) -> std::io::Result<Stage> {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = dest.file_name().map_or_else(|| "dest".into(), |n| n.to_string_lossy().into_owned());
        // A first render may come before anything made dest's directory.
        std::fs::create_dir_all(dir)?;
        // In dest's directory, so the rename is atomic (same filesystem).
        let mut file = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".stage").tempfile_in(dir)?;
        // No fsync: the rename is what readers see atomically, and ext4
        // (auto_da_alloc) writes a file renamed over another out first.
        file.write_all(content.as_bytes())?;
        let (_, path) = file.keep().map_err(|e| e.error)?;
        Ok(Stage { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn replace(mut self, dest: &Path) -> std::io::Result<()> {
        let path = self.path.take().unwrap_or_default();
        std::fs::rename(&path, dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `check_cmd` with the stage file for `{{ src }}` (confd wrote `{{.src}}`).
fn check_command(check: &str, stage: &Path) -> String {
    static PLACEHOLDER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\{\{\s*\.?src\s*\}\}").expect("a valid pattern"));
    let quoted = shlex::try_quote(&stage.to_string_lossy()).map(std::borrow::Cow::into_owned).unwrap_or_default();
    PLACEHOLDER.replace_all(check, regex::NoExpand(&quoted)).into_owned()
}

/// Runs `sh -c COMMAND` for at most `limit`: whether it succeeded, how it
/// ended, and its last lines of output.
async fn run(command: &str, limit: Duration) -> (bool, String, String) {
    let mut shell = Command::new("/bin/sh");
    shell
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match crate::children::spawn_owned(&mut shell) {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run /bin/sh: {e}"), String::new()),
    };
    let pid = child.id();
    let finished = tokio::time::timeout(limit, child.wait_with_output()).await;
    crate::children::disown(pid);
    match finished {
        Err(_) => (false, format!("no exit within {} s", limit.as_secs()), String::new()),
        Ok(Err(e)) => (false, format!("cannot run /bin/sh: {e}"), String::new()),
        Ok(Ok(output)) => {
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            let lines: Vec<&str> = text.lines().collect();
            // One line, so an error that carries it stays one line.
            let tail = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join(" | ");
            (output.status.success(), output.status.to_string(), tail)
        }
    }
}
