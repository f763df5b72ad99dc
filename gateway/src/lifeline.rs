//! The process a push is answered through: `nap serve` (or `nap
//! ssh-command`), which runs git for the pusher. The deploy runs in git's
//! hook, a process of its own that outlives a killed gateway; before it
//! makes a release current, it checks that the gateway still lives, since
//! the pusher of a gateway that is gone was already told the push failed.

use serde::{Deserialize, Serialize};

/// A process, named so that a later process with the same PID is not
/// taken for it: its PID and the moment it started (in clock ticks after
/// boot, as `/proc/PID/stat` has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifeline {
    pid: i32,
    started: u64,
}

impl Lifeline {
    /// This process; `None` where `/proc` does not say.
    pub fn this_process() -> Option<Lifeline> {
        let me = procfs::process::Process::myself().ok()?;
        Some(Lifeline { pid: me.pid, started: me.stat().ok()?.starttime })
    }

    /// Whether the process still runs (a zombie does not). Only `/proc`
    /// saying it is gone counts: a read that fails otherwise (this process
    /// out of files) is no proof, and the deploy's lock still holds.
    pub fn is_alive(&self) -> bool {
        match procfs::process::Process::new(self.pid).and_then(|process| process.stat()) {
            Ok(stat) => stat.starttime == self.started && stat.state != 'Z' && stat.state != 'X',
            Err(procfs::ProcError::NotFound(_)) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lifeline;

    #[test]
    fn this_process_lives_and_a_child_that_ended_does_not() {
        assert!(Lifeline::this_process().is_some_and(|me| me.is_alive()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = i32::try_from(child.id()).expect("pid");
        let stat = procfs::process::Process::new(pid).and_then(|p| p.stat()).expect("stat of the child");
        let line = Lifeline { pid, started: stat.starttime };
        child.wait().expect("wait");
        assert!(!line.is_alive());
        assert!(!Lifeline { started: stat.starttime + 1, ..line }.is_alive(), "another process, same PID");
    }
}
