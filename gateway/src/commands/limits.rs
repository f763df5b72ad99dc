//! `limits APP`, `limits set APP memory=512m cpus=1 pids=256`,
//! `limits unset APP NAME ...`: what an app's instances may use.

use clap::{Args, Subcommand};
use nap_runner::{LimitName, Limits, LimitsError};

use super::{AppChange, Changed, CommandError, Reply, existing_app};
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy::{ConfigChange, LimitsChange};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LimitsArgs {
    /// The app whose limits to show
    #[arg(required = true)]
    app: Option<String>,
    #[command(subcommand)]
    command: Option<LimitsCommand>,
}

#[derive(Debug, Subcommand)]
enum LimitsCommand {
    /// Set limits (admin keys only); the app restarts as a new release
    ///
    /// memory: bytes with an optional unit k, m or g (512m), swap included;
    /// cpus: CPUs, to the thousandth (1.5); pids: processes and threads.
    Set {
        app: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        /// Only store the change; it takes effect with the next release
        #[arg(long)]
        no_restart: bool,
    },
    /// Remove limits (admin keys only); the app restarts as a new release
    Unset {
        app: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Only store the change; it takes effect with the next release
        #[arg(long)]
        no_restart: bool,
    },
}

/// A limits change nap cannot make.
#[derive(Debug, thiserror::Error)]
pub enum LimitsCommandError {
    #[error(transparent)]
    Invalid(#[from] LimitsError),
    #[error("{name} is not limited for {app}")]
    NotSet { name: LimitName, app: String },
}

pub async fn run(ctx: &Context, caller: &Caller, args: LimitsArgs, io: &mut Io) -> Result<Reply, CommandError> {
    let (app, limits, change, no_restart) = match args.command {
        None => {
            let app = existing_app(ctx, caller, args.app.as_deref().unwrap_or_default()).await?;
            let limits: Limits = ctx.store.limits(app.as_str()).await?;
            let text = if limits == Limits::default() {
                format!("{app} has no limits; set some with: limits set {app} memory=512m cpus=1 pids=256")
            } else {
                limits.pairs().iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("\n")
            };
            return Ok(Reply::new(text, serde_json::to_value(limits).unwrap_or_default()));
        }
        Some(LimitsCommand::Set { app, pairs, no_restart }) => {
            caller.check_admin("change limits")?;
            let app = existing_app(ctx, caller, &app).await?;
            let mut set = Limits::default();
            for pair in &pairs {
                set.set(pair).map_err(LimitsCommandError::from)?;
            }
            let change = set.pairs().iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>();
            (app, LimitsChange::Set(set), format!("set {}", change.join(" ")), no_restart)
        }
        Some(LimitsCommand::Unset { app, names, no_restart }) => {
            caller.check_admin("change limits")?;
            let app = existing_app(ctx, caller, &app).await?;
            let current: Limits = ctx.store.limits(app.as_str()).await?;
            let names: Vec<LimitName> = names
                .iter()
                .map(|name| name.parse())
                .collect::<Result<_, LimitsError>>()
                .map_err(LimitsCommandError::from)?;
            if let Some(name) = names.iter().find(|name| !current.has(**name)) {
                return Err(LimitsCommandError::NotSet { name: *name, app: app.to_string() }.into());
            }
            let change = format!("unset {}", names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
            (app, LimitsChange::Unset(names), change, no_restart)
        }
    };
    let change = AppChange { changed: Changed::Limits, change, config: ConfigChange::Keep, limits, no_restart };
    super::change_app(ctx, caller, &app, change, io).await
}
