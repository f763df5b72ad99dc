//! `git-receive-pack` and `git-upload-pack`: the real git, fed the client's
//! streams.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::{CommandError, fail};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::hook::{self, HookInput};
use crate::lifeline::Lifeline;
use crate::repos;

/// The app a repo path names, if the caller may use it.
fn permitted_app(caller: &Caller, repo: &str) -> Result<AppName, CommandError> {
    let app = AppName::from_repo_path(repo)?;
    caller.check_app(&app)?;
    Ok(app)
}

pub async fn receive_pack(ctx: &Arc<Context>, caller: &Caller, repo: &str, mut io: Io) -> u32 {
    let app = match permitted_app(caller, repo) {
        Ok(app) => app,
        Err(err) => return fail(&mut io.stderr, &err.to_string()).await,
    };
    // A first push makes the app: its name must suit a new app.
    match ctx.store.app(app.as_str()).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(err) = app.check_new() {
                return fail(&mut io.stderr, &err.to_string()).await;
            }
        }
        Err(err) => return fail(&mut io.stderr, &err.to_string()).await,
    }
    let settings = &ctx.settings;
    let hold = match repos::Hold::open(&settings.repos_dir(), &settings.locks_dir(), &app, &ctx.exe) {
        Ok(hold) => hold,
        Err(err) => return fail(&mut io.stderr, &format!("cannot open the repo of {app}: {err}")).await,
    };
    let status = run_git(ctx, caller, &app, "receive-pack", hold.repo.clone(), io).await;
    // A refused first push must not leave an empty repo behind.
    let repo = hold.repo.clone();
    if let Err(err) = hold.close() {
        warn!(repo = %repo.display(), error = %err, "could not remove the empty repo of a refused first push");
    }
    status
}

pub async fn upload_pack(ctx: &Arc<Context>, caller: &Caller, repo: &str, mut io: Io) -> u32 {
    let app = match permitted_app(caller, repo) {
        Ok(app) => app,
        Err(err) => return fail(&mut io.stderr, &err.to_string()).await,
    };
    let repo = repos::path(&ctx.settings.repos_dir(), &app);
    if !repo.exists() {
        return fail(&mut io.stderr, &format!("app {app} does not exist; push to it first")).await;
    }
    run_git(ctx, caller, &app, "upload-pack", repo, io).await
}

/// Runs `git SERVICE REPO` with the client's streams, in a process group of
/// its own: if the client goes away, the whole group (git and the deploy hook
/// under it) is killed, which also frees the app's deploy lock.
async fn run_git(ctx: &Arc<Context>, caller: &Caller, app: &AppName, service: &str, repo: PathBuf, io: Io) -> u32 {
    let Io { mut stdin, mut stdout, mut stderr, client_gone, .. } = io;
    // A push's pre-receive hook runs with exactly these settings; the file
    // goes when git is done. A fetch runs no hook and needs none.
    let input = if service == "receive-pack" {
        let input = HookInput {
            settings: ctx.settings.clone(),
            app: app.clone(),
            key: caller.name().to_owned(),
            gateway: Lifeline::this_process(),
        };
        match input.write(&ctx.settings.data_dir().join("run")) {
            Ok(path) => Some(path),
            Err(err) => return fail(&mut stderr, &err.to_string()).await,
        }
    } else {
        None
    };
    let mut git = tokio::process::Command::new("git");
    if let Some(input) = &input {
        // A push is checked object by object and bounded in size; git
        // refuses it with its own one-line reason. Files over 16 MiB are
        // streamed, never inflated in memory whole: by git as it unpacks
        // them, and (the setting reaches git's children) as the hook reads
        // them for the build.
        git.env(hook::INPUT_VAR, &**input)
            .arg("-c")
            .arg(format!("receive.maxInputSize={}", ctx.settings.max_push_size()))
            .args(["-c", "receive.fsckObjects=true", "-c", "core.bigFileThreshold=16m"]);
    }
    let mut child = match git
        .arg(service)
        .arg(&repo)
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
    let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let kill_group = || {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    };
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
        if copied.is_err() {
            // The client stopped reading: nobody is left to see this push.
            kill_group();
        }
        (copied, child.wait().await)
    };
    let status = tokio::select! {
        (copied, status) = finished => {
            if let Err(err) = copied {
                warn!(error = %err, "client stopped reading");
            }
            match status {
                Ok(status) => status.code().and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
                Err(err) => { warn!(error = %err, "waiting for git failed"); 1 }
            }
        }
        () = client_gone.cancelled() => {
            info!(%app, service, "client went away; stopping git and its hooks");
            kill_group();
            1
        }
    };
    feed.abort();
    drop(input);
    status
}
