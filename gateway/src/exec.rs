//! Running one remote command for an authenticated key, over any transport:
//! the russh gateway hands in its channel, `ssh-command` its own stdio.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use nap_state::Store;

use crate::app_name::AppName;
use crate::keys::AuthorizedKey;
use crate::remote::{self, RemoteCommand};
use crate::repos;
use crate::settings::Settings;

/// What every command needs, built once per process.
pub struct Context {
    pub settings: Settings,
    pub store: Store,
    /// This `nap` binary, which git hooks call back into.
    pub exe: PathBuf,
}

/// A command's standard streams, and a token that fires when the client is gone.
pub struct Io<R, W, E> {
    pub stdin: R,
    pub stdout: W,
    pub stderr: E,
    pub client_gone: CancellationToken,
}

/// Runs `command_line` for `key`; answers the exit status to report.
pub async fn run<R, W, E>(ctx: &Arc<Context>, key: &AuthorizedKey, command_line: &str, mut io: Io<R, W, E>) -> u32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let command = match remote::parse(command_line) {
        Ok(command) => command,
        Err(err) => {
            info!(key = %key.name, command = command_line, error = %err, "refused command");
            return fail(&mut io.stderr, &err.to_string()).await;
        }
    };
    info!(key = %key.name, ?command, "command");
    match command {
        RemoteCommand::Help(text) => say(&mut io.stdout, &text).await,
        RemoteCommand::Version => say(&mut io.stdout, &format!("nap {}\n", env!("CARGO_PKG_VERSION"))).await,
        RemoteCommand::ReceivePack(app) => receive_pack(ctx, key, &app, io).await,
        RemoteCommand::UploadPack(app) => {
            let repo = repos::path(&ctx.settings.repos_dir(), &app);
            if !repo.exists() {
                return fail(&mut io.stderr, &format!("app {app} does not exist; push to it first")).await;
            }
            run_git(ctx, key, &app, "upload-pack", repo, io).await
        }
    }
}

async fn receive_pack<R, W, E>(ctx: &Arc<Context>, key: &AuthorizedKey, app: &AppName, mut io: Io<R, W, E>) -> u32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let (repo, created) = match repos::open_or_create(&ctx.settings.repos_dir(), app, &ctx.exe) {
        Ok(found) => found,
        Err(err) => return fail(&mut io.stderr, &format!("cannot open the repo of {app}: {err}")).await,
    };
    let status = run_git(ctx, key, app, "receive-pack", repo.clone(), io).await;
    // A refused first push must not leave an empty repo behind.
    if created && let Err(err) = repos::remove_if_empty(&repo) {
        warn!(repo = %repo.display(), error = %err, "could not remove the empty repo of a refused first push");
    }
    status
}

/// Runs `git SERVICE REPO` with the client's streams, in a process group of
/// its own: if the client goes away, the whole group (git and the deploy hook
/// under it) is killed, which also frees the app's deploy lock.
async fn run_git<R, W, E>(
    ctx: &Arc<Context>,
    key: &AuthorizedKey,
    app: &AppName,
    service: &str,
    repo: PathBuf,
    io: Io<R, W, E>,
) -> u32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let Io { mut stdin, mut stdout, mut stderr, client_gone } = io;
    let mut child = match tokio::process::Command::new("git")
        .arg(service)
        .arg(&repo)
        .envs(ctx.settings.child_env())
        .env("NAP_APP", app.as_str())
        .env("NAP_KEY", &key.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return fail(&mut stderr, &format!("cannot run git {service}: {err}")).await,
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (Some(mut child_in), Some(mut child_out), Some(mut child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return fail(&mut stderr, "git's standard streams were not piped").await;
    };

    let feed = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdin, &mut child_in).await;
        let _ = child_in.shutdown().await;
    });
    let outputs = async {
        let out = async {
            tokio::io::copy(&mut child_out, &mut stdout).await?;
            stdout.flush().await
        };
        let err = async {
            tokio::io::copy(&mut child_err, &mut stderr).await?;
            stderr.flush().await
        };
        tokio::try_join!(out, err)
    };
    let finished = async {
        // Output first: git exits only after writing it, and the client must
        // get every byte before the exit status.
        let copied = outputs.await;
        if copied.is_err()
            && let Some(pgid) = pgid
        {
            // The client stopped reading: nobody is left to see this push.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let status = child.wait().await;
        (copied, status)
    };
    let status = tokio::select! {
        (copied, status) = finished => {
            if let Err(err) = copied {
                warn!(error = %err, "client stopped reading");
            }
            match status {
                Ok(status) => status.code().map_or(1, |c| c as u32),
                Err(err) => { warn!(error = %err, "waiting for git failed"); 1 }
            }
        }
        () = client_gone.cancelled() => {
            if let Some(pgid) = pgid {
                info!(%app, service, "client went away; stopping git and its hooks");
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            1
        }
    };
    feed.abort();
    status
}

async fn say<W: AsyncWrite + Unpin>(out: &mut W, text: &str) -> u32 {
    let _ = out.write_all(text.as_bytes()).await;
    let _ = out.flush().await;
    0
}

/// Writes the one-line error and answers the failing exit status.
pub async fn fail<W: AsyncWrite + Unpin>(err: &mut W, message: &str) -> u32 {
    let _ = err.write_all(format!("error: {message}\n").as_bytes()).await;
    let _ = err.flush().await;
    1
}
