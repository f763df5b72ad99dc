//! The children this process waits for itself (`check_cmd` and `reload_cmd`,
//! run by [`crate::apply`]), so that the reaper of [`crate::entrypoint`],
//! which collects every other exited child when nap runs as PID 1, leaves
//! their exit statuses to them. A leaf module: both sides use it.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

/// Children that someone else waits for (check_cmd and reload_cmd, run by
/// `apply`): the reaper leaves them to their owner, who needs their status.
static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

pub(crate) fn owned() -> MutexGuard<'static, BTreeSet<i32>> {
    OWNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `command` as a child whose exit its caller collects; the caller
/// calls [`disown`] once it has.
pub(crate) fn spawn_owned(command: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    // Held across the fork, so the reaper never sees the child unregistered.
    let mut owned = owned();
    let child = command.spawn()?;
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        owned.insert(pid);
    }
    Ok(child)
}

pub(crate) fn disown(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        owned().remove(&pid);
    }
}
