//! Holds a container still while it is snapshotted.
//!
//! `docker commit` pauses a container by asking containerd, whose shim runs
//! `runc pause` and later `runc resume`: two Go processes per snapshot. On a
//! busy host that is a quarter of a commit's CPU. The pause itself is only a
//! write to the container's freezer cgroup, so nap freezes the cgroup itself
//! when it can see it, and asks the daemon to pause only when it cannot (a
//! remote daemon, another PID namespace, no freezer).
//!
//! A freeze is undone when its [`Frozen`] is dropped, so an error, a panic or
//! a cancelled command thaws the container too. Only a killed nap leaves a
//! container frozen, and the next snapshot of it thaws it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use procfs::process::Process;

/// How long the kernel may take to stop every task of a container.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("cannot freeze container {container} ({path}): {source}")]
    Write {
        container: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container} did not freeze within {}s", FREEZE_TIMEOUT.as_secs())]
    Timeout { container: String },
}

/// The freezer interface of one cgroup: cgroup v1's `freezer.state`, or
/// cgroup v2's `cgroup.freeze` with its `cgroup.events`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Freezer {
    V1 { state: PathBuf },
    V2 { freeze: PathBuf, events: PathBuf },
}

/// A frozen container, thawed on drop.
#[derive(Debug)]
pub struct Frozen {
    container: String,
    freezer: Freezer,
}

impl Frozen {
    /// Freezes the cgroup of `container`, whose first process is `pid` in
    /// this host's PID namespace. `Ok(None)` when that cgroup is not
    /// reachable from here, so the caller must let the daemon pause it.
    pub async fn freeze(container: &str, pid: i64) -> Result<Option<Frozen>, FreezeError> {
        let Some(freezer) = i32::try_from(pid).ok().filter(|pid| *pid > 0).and_then(|pid| freezer_of(container, pid))
        else {
            return Ok(None);
        };
        let frozen = Frozen { container: container.to_owned(), freezer };
        let started = tokio::time::Instant::now();
        loop {
            // cgroup v1 can stay FREEZING when a task forks meanwhile; asking
            // again is how runc gets it through, so the request is repeated.
            frozen.request(true)?;
            if frozen.is_frozen() {
                return Ok(Some(frozen));
            }
            if started.elapsed() > FREEZE_TIMEOUT {
                return Err(FreezeError::Timeout { container: container.to_owned() });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Thaws the container now, reporting a failure the drop would only log.
    pub fn thaw(self) -> Result<(), FreezeError> {
        let result = self.request(false);
        std::mem::forget(self);
        result
    }

    fn request(&self, frozen: bool) -> Result<(), FreezeError> {
        let (path, value) = match &self.freezer {
            Freezer::V1 { state } => (state, if frozen { "FROZEN" } else { "THAWED" }),
            Freezer::V2 { freeze, .. } => (freeze, if frozen { "1" } else { "0" }),
        };
        std::fs::write(path, value).map_err(|source| FreezeError::Write {
            container: self.container.clone(),
            path: path.display().to_string(),
            source,
        })
    }

    fn is_frozen(&self) -> bool {
        match &self.freezer {
            Freezer::V1 { state } => std::fs::read_to_string(state).is_ok_and(|s| s.trim() == "FROZEN"),
            Freezer::V2 { events, .. } => {
                std::fs::read_to_string(events).is_ok_and(|s| s.lines().any(|line| line.trim() == "frozen 1"))
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(err) = self.request(false) {
            tracing::error!(error = %err, "could not thaw a container after its snapshot");
        }
    }
}

/// The freezer of the cgroup that `pid` is in, if that cgroup is the
/// container's (its path names the container id: `/docker/ID` or
/// `docker-ID.scope`) and this process can reach it.
fn freezer_of(container: &str, pid: i32) -> Option<Freezer> {
    let cgroups = Process::new(pid).ok()?.cgroups().ok()?;
    let mounts = Process::myself().ok()?.mountinfo().ok()?;
    let v1 = cgroups.0.iter().find(|c| c.hierarchy != 0 && c.controllers.iter().any(|c| c == "freezer"));
    let freezer = if let Some(cgroup) = v1 {
        let mount = mounts.iter().find(|m| m.fs_type == "cgroup" && m.super_options.contains_key("freezer"))?;
        let dir = cgroup_dir(&mount.mount_point, &mount.root, &cgroup.pathname, container)?;
        Freezer::V1 { state: dir.join("freezer.state") }
    } else {
        let cgroup = cgroups.0.iter().find(|c| c.hierarchy == 0)?;
        let mount = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
        let dir = cgroup_dir(&mount.mount_point, &mount.root, &cgroup.pathname, container)?;
        Freezer::V2 { freeze: dir.join("cgroup.freeze"), events: dir.join("cgroup.events") }
    };
    let control = match &freezer {
        Freezer::V1 { state } => state,
        Freezer::V2 { freeze, .. } => freeze,
    };
    control.exists().then_some(freezer)
}

/// Where a cgroup's files are: its path is relative to the hierarchy as this
/// process sees it, which is mounted at `mount_point` from `mount_root`.
fn cgroup_dir(mount_point: &Path, mount_root: &str, pathname: &str, container: &str) -> Option<PathBuf> {
    if container.len() < 12 || !pathname.contains(container) {
        return None;
    }
    let relative = Path::new(pathname).strip_prefix(mount_root).ok()?;
    Some(mount_point.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "aa5c796a40ab2272284864a05782dff549889c3cb1eb6c53d6ffbbae0fff72be";

    #[test]
    fn a_cgroup_path_is_found_below_its_mount() {
        let dir = cgroup_dir(Path::new("/sys/fs/cgroup/freezer"), "/", &format!("/docker/{ID}"), ID);
        assert_eq!(dir, Some(PathBuf::from(format!("/sys/fs/cgroup/freezer/docker/{ID}"))));
        let scope = format!("/system.slice/docker-{ID}.scope");
        let dir = cgroup_dir(Path::new("/sys/fs/cgroup"), "/system.slice", &scope, ID);
        assert_eq!(dir, Some(PathBuf::from(format!("/sys/fs/cgroup/docker-{ID}.scope"))));
    }

    #[test]
    fn a_cgroup_that_is_not_the_containers_is_never_used() {
        assert_eq!(cgroup_dir(Path::new("/sys/fs/cgroup"), "/", "/user.slice/session-1.scope", ID), None);
        // Seen from another cgroup namespace the path may lie outside the mount.
        assert_eq!(cgroup_dir(Path::new("/sys/fs/cgroup"), "/kubepods", &format!("/docker/{ID}"), ID), None);
        assert_eq!(cgroup_dir(Path::new("/sys/fs/cgroup"), "/", "/docker/", ""), None);
    }
}
