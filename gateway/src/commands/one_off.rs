//! `run APP [--type T] -- CMD ARGS...`: a one-off container of the app's
//! current release, with the app's config as it is now, on the app's own
//! network, attached to the SSH channel: input,
//! output and (with `ssh -t`) a terminal that follows the client's size.
//! Its exit code is the command's exit status. It is removed when it ends,
//! and when the client goes.

use bollard::container::LogOutput;
use clap::Args;
use futures_util::StreamExt;
use nap_runner::{DockerRunner, KubernetesRunner, OneOff, ProcessType, Runner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CommandError, Reply, existing_app};
use crate::caller::Caller;
use crate::context::{Context, Io};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app whose current release runs the command
    app: String,
    /// Run this Procfile type's command (with no CMD; `release` too), and
    /// name the container after it
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// The command and its arguments, as words: never through a shell,
    /// unless you run one (over ssh: -- sh -c "'echo $X'")
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OneOffError {
    #[error("run needs a command: run APP -- CMD ARGS..., or run APP --type TYPE")]
    NoCommand,
    #[error(transparent)]
    Type(#[from] nap_runner::process::InvalidProcessType),
    #[error("{kind} is not a process type of {app}")]
    UnknownType { app: String, kind: ProcessType },
    #[error("{kind} runs the image's own command; give a command: run APP -- CMD")]
    ImageCommand { kind: ProcessType },
}

pub async fn run(ctx: &Context, caller: &Caller, args: RunArgs, io: &mut Io) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, &args.app).await?;
    let release =
        ctx.store.current_release(app.as_str()).await?.ok_or_else(|| CommandError::NothingRunning(app.clone()))?;
    let kind = args.kind.as_deref().map(ProcessType::parse).transpose().map_err(OneOffError::from)?;
    let command = match (&kind, args.command.is_empty()) {
        (_, false) => args.command,
        (None, true) => return Err(OneOffError::NoCommand.into()),
        (Some(kind), true) => {
            let procfile =
                nap_runner::Procfile::of(release.procfile.as_deref()).map_err(crate::deploy::DeployError::from)?;
            if !procfile.declares(kind) && procfile.command_line(kind.as_str()).is_none() {
                return Err(OneOffError::UnknownType { app: app.to_string(), kind: kind.clone() }.into());
            }
            procfile.argv(kind.as_str()).ok_or_else(|| OneOffError::ImageCommand { kind: kind.clone() })?
        }
    };
    let runner = ctx.runner().await?;
    let network =
        crate::networks::of_app(ctx, &runner, app.as_str()).await.map_err(crate::deploy::DeployError::from)?;
    // The app's config as it is now (`config set --no-restart` included).
    let config = ctx.store.config(app.as_str()).await?;
    let env: Vec<(String, String)> = config.into_iter().collect();
    let terminal = io.terminal.as_ref().map(|size| *size.borrow());
    let job = OneOff {
        app: app.as_str(),
        release: release.version,
        image: &release.image,
        command: &command,
        env: &env,
        limits: ctx.store.limits(app.as_str()).await?,
        what: match &kind {
            Some(kind) => format!("run-{kind}.{}", rand::random_range(1000..10000)),
            None => format!("run.{}", rand::random_range(1000..10000)),
        },
        tty: terminal,
        stdin: true,
        network: &network,
    };
    let ended = match &runner {
        Runner::Docker(docker) => in_container(docker, &job, io).await?,
        Runner::Systemd(systemd) => in_container(systemd.docker(), &job, io).await?,
        Runner::Kubernetes(cluster) => in_pod(cluster, &job, ctx.settings.release_timeout(), io).await?,
        Runner::Swarm(_) => return Err(nap_runner::RunError::from(nap_runner::SwarmError::Unsupported("`run`")).into()),
    };
    let Some(code) = ended else {
        tracing::info!("the client went; the one-off is removed");
        return Ok(Reply::Exited(255));
    };
    tracing::info!(code, "one-off ended");
    Ok(Reply::Exited(u32::try_from(code).ok().filter(|c| *c <= 255).unwrap_or(255)))
}

/// Runs `job` in a container on this host's Docker, attached to the
/// client; its exit code, or `None` when the client went first.
async fn in_container(docker: &DockerRunner, job: &OneOff<'_>, io: &mut Io) -> Result<Option<i64>, CommandError> {
    let attached = docker.start_one_off(job).await?;
    let name = attached.name.clone();
    tracing::info!(container = %name, "one-off started");
    // Behind OpenSSH the pty is this process's: keys go to the container
    // as typed, and only its terminal echoes them.
    let raw = if io.own_terminal && job.tty.is_some() { crate::terminal::RawMode::enter() } else { None };
    let ended = attach(docker, attached, io).await;
    drop(raw);
    docker.discard_one_off(&name).await;
    Ok(ended)
}

/// Runs `job` as a pod on the cluster, with `kubectl attach -i` relaying
/// input and output (no terminal there); its exit code, or `None` when the
/// client went first. The pod may run for `release_timeout` at most.
async fn in_pod(
    cluster: &KubernetesRunner,
    job: &OneOff<'_>,
    timeout: std::time::Duration,
    io: &mut Io,
) -> Result<Option<i64>, CommandError> {
    let (name, mut attach) = cluster.start_one_off(job, timeout).await?;
    tracing::info!(pod = %name, "one-off started");
    let (Some(mut input), Some(mut output), Some(mut errors)) =
        (attach.stdin.take(), attach.stdout.take(), attach.stderr.take())
    else {
        cluster.discard_one_off(&name).await;
        return Ok(Some(-1));
    };
    let mut stdin = std::mem::replace(&mut io.stdin, Box::new(tokio::io::empty()));
    let feed = async move {
        let _ = tokio::io::copy(&mut stdin, &mut input).await;
        drop(input);
        std::future::pending::<()>().await;
    };
    let (stdout, stderr) = (&mut io.stdout, &mut io.stderr);
    let relay = async {
        let (out, err) = tokio::join!(relay(&mut output, stdout), relay(&mut errors, stderr));
        out && err
    };
    let client_gone = io.client_gone.clone();
    let relayed = tokio::select! {
        relayed = relay => relayed,
        () = feed => false,
        () = client_gone.cancelled() => false,
    };
    let _ = attach.kill().await;
    let code = if relayed { Some(cluster.one_off_exit(&name).await?) } else { None };
    cluster.discard_one_off(&name).await;
    Ok(code)
}

/// Copies `from` to `to` as it comes; `false` when `to` went away.
async fn relay(from: &mut (impl tokio::io::AsyncRead + Unpin), to: &mut crate::context::Output) -> bool {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() || to.flush().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Joins the one-off to the client until it ends; its exit code, or `None`
/// when the client went first.
async fn attach(docker: &DockerRunner, attached: nap_runner::docker::one_off::Attached, io: &mut Io) -> Option<i64> {
    let nap_runner::docker::one_off::Attached { name, mut output, mut input } = attached;
    // Client → container, until the client's EOF, which closes its input.
    let mut stdin = std::mem::replace(&mut io.stdin, Box::new(tokio::io::empty()));
    let feed = async move {
        let _ = tokio::io::copy(&mut stdin, &mut input).await;
        let _ = input.shutdown().await;
        std::future::pending::<()>().await;
    };
    let mut terminal = io.terminal.clone();
    let resize = async {
        let Some(size) = terminal.as_mut() else { return std::future::pending::<()>().await };
        while size.changed().await.is_ok() {
            let (columns, rows) = *size.borrow_and_update();
            docker.resize(&name, columns, rows).await;
        }
        std::future::pending::<()>().await;
    };
    let (stdout, stderr) = (&mut io.stdout, &mut io.stderr);
    let relay = async {
        while let Some(Ok(chunk)) = output.next().await {
            let written = match chunk {
                LogOutput::StdErr { message } => stderr.write_all(&message).await.and(stderr.flush().await),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.write_all(&message).await.and(stdout.flush().await)
                }
                LogOutput::StdIn { .. } => Ok(()),
            };
            if written.is_err() {
                return false;
            }
        }
        true
    };
    let client_gone = io.client_gone.clone();
    tokio::select! {
        relayed = relay => {
            if !relayed {
                return None;
            }
        }
        () = feed => {}
        () = resize => {}
        () = client_gone.cancelled() => return None,
    }
    tokio::select! {
        code = docker.exit_code(&name) => code.ok(),
        () = client_gone.cancelled() => None,
    }
}
