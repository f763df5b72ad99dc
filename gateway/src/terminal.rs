//! This process's own terminal, where `run` is given one without russh:
//! behind OpenSSH (`ssh -t` makes sshd give `ssh-command` a pty) or on the
//! host. `run` passes its size on to the container's terminal, follows it
//! on SIGWINCH, and puts it in raw mode while the container has it, so
//! that keys reach the container as they are typed and are echoed once,
//! by the container's terminal.

use std::io::IsTerminal;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use tokio::sync::watch;
use tracing::debug;

/// The size of this process's terminal, columns by rows, as it changes;
/// `None` when standard input is not a terminal.
pub fn size() -> Option<watch::Receiver<(u16, u16)>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let (sender, receiver) = watch::channel(read_size()?);
    let handle = tokio::runtime::Handle::try_current().ok()?;
    handle.spawn(async move {
        let Ok(mut changes) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
            return;
        };
        while changes.recv().await.is_some() {
            let Some(size) = read_size() else { continue };
            if sender.send(size).is_err() {
                return;
            }
        }
    });
    Some(receiver)
}

fn read_size() -> Option<(u16, u16)> {
    let size = tcgetwinsize(std::io::stdin()).ok()?;
    Some(terminal_size(u32::from(size.ws_col), u32::from(size.ws_row)))
}

/// A terminal's size as a client says it (an SSH pty request, a window
/// change, this process's terminal), within what a terminal can be; one
/// that says none (0: the client's input is not a terminal) gets 80x24.
pub fn terminal_size(columns: u32, rows: u32) -> (u16, u16) {
    let clamp = |n: u32, default: u16| if n == 0 { default } else { u16::try_from(n.min(10_000)).unwrap_or(default) };
    (clamp(columns, 80), clamp(rows, 24))
}

/// This process's terminal in raw mode, until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on standard input's terminal; `None` when it is not one.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Err(err) = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved) {
            debug!(error = %err, "could not restore the terminal");
        }
    }
}
