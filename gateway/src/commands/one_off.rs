//! `run APP [--type T] -- CMD ARGS...`: a one-off container of the app's
//! current release, with the app's config as it is now, on the app's own
//! network, attached to the SSH channel: input,
//! output and (with `ssh -t`) a terminal that follows the client's size.
//! Its exit code is the command's exit status. It is removed when it ends,
//! and when the client goes.

use clap::Args;
use nap_runner::{OneOff, ProcessType};

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
    Type(#[from] nap_runner::InvalidProcessType),
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
    // Behind OpenSSH the pty is this process's: keys go to the one-off as
    // typed, and only its terminal echoes them.
    let raw = if io.own_terminal && job.tty.is_some() && runner.gives_terminal() {
        crate::terminal::RawMode::enter()
    } else {
        None
    };
    let client = nap_runner::Client {
        stdin: std::mem::replace(&mut io.stdin, Box::new(tokio::io::empty())),
        stdout: &mut *io.stdout,
        stderr: &mut *io.stderr,
        terminal: io.terminal.clone(),
        gone: io.client_gone.clone(),
    };
    let ended = runner.run_attached(&job, ctx.settings.release_timeout(), client).await;
    drop(raw);
    let ended = ended?;
    let Some(code) = ended else {
        tracing::info!("the client went; the one-off is removed");
        return Ok(Reply::Exited(255));
    };
    tracing::info!(code, "one-off ended");
    Ok(Reply::Exited(u32::try_from(code).ok().filter(|c| *c <= 255).unwrap_or(255)))
}
