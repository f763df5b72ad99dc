//! The commands people run: one clap tree, shared by the SSH router
//! (`ssh HOST VERB ...`) and the local CLI (`nap VERB ...`).
//!
//! Each handler answers a [`Reply`] (text, and JSON for `--json`) or a
//! [`CommandError`], which the caller prints as one line with exit status 1.

mod apps;
mod certs;
mod commiter;
mod config;
mod domains;
mod git;
mod instances;
mod keys;
mod limits;
mod one_off;
mod placement;
mod releases;
mod rollout;
mod snapshot;
mod table;

use std::sync::Arc;

use clap::{Args, Subcommand};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::info;

use crate::app_name::{AppName, InvalidAppName, ReservedAppName};
use crate::caller::{Caller, Forbidden};
use crate::context::{Context, Io};
use crate::deploy::DeployError;
use crate::report::Reporter;
use nap_state::ReleaseCause;

pub use commiter::{CommiterError, check_import};

#[derive(Debug, Subcommand)]
pub enum Operate {
    /// List apps with their current release and state; create or destroy one
    Apps(apps::AppsArgs),
    /// Show each instance of an app, or scale it (`ps scale APP web=2`)
    Ps(instances::PsArgs),
    /// Show an app's output
    Logs {
        app: String,
        /// Only the last N lines
        #[arg(long, short = 'n', value_name = "N")]
        tail: Option<u64>,
        /// Keep streaming until the client disconnects
        #[arg(long, short = 'f')]
        follow: bool,
        /// The router's access log of the app instead (nap serve's router)
        #[arg(long)]
        router: bool,
    },
    /// Show, set or unset an app's environment
    Config(config::ConfigArgs),
    /// Show, set or unset what an app's instances may use: memory, cpus, pids
    Limits(limits::LimitsArgs),
    /// Show or set where the swarm runner may place an app's tasks (node.labels.zone==a)
    Placement(placement::PlacementArgs),
    /// List an app's releases, newest first
    Releases { app: String },
    /// Run an earlier release's image and config again, as a new release
    Rollback {
        app: String,
        /// The release to go back to, e.g. v5 [default: the previous good one]
        // Its own id: `version` is the --version flag every subcommand has.
        #[arg(id = "release", value_name = "VERSION")]
        version: Option<String>,
    },
    /// Restart an app's running release
    Restart { app: String },
    /// Run a one-off command in a container of the app's current release (`ssh -t` for a terminal)
    ///
    /// The container has the app's config and limits; input, output and the
    /// exit code come back over SSH, and it is removed when it ends or the
    /// client goes. Example: run hello -- /app/migrate --status
    Run(one_off::RunArgs),
    /// List, add, change or remove SSH keys (admin keys only)
    Keys(keys::KeysArgs),
    /// Store the commiter flow's cluster settings (admin keys only)
    Manage(commiter::ManageArgs),
    /// Read the commiter tool's import YAML from standard input (admin keys only)
    Import(commiter::ImportArgs),
    /// Snapshot this host's imported containers into images that keep their IP (admin keys only)
    ///
    /// Reads the (app, component) pairs imported for this host's IP (`host_ip`,
    /// else the default route's address) and snapshots their running
    /// containers in parallel: nap's releases (by label) and containers named
    /// APPrc-COMPONENT. Each is held still while it is committed to
    /// REPOSITORY/APP-COMPONENT-CONTAINERIP:TAG, pushed when its state is 1,
    /// and recorded with its IP (ROOT/ips/IMAGE) and its take-over RC
    /// (`takeover APP`). One commit runs at a time on a host.
    Commit {
        /// Only this app's containers
        app: Option<String>,
    },
    /// Print the take-over ReplicationControllers that `commit` made for an app
    Takeover { app: String },
    /// Start a snapshot image here with the container IP recorded for it (admin keys only)
    ///
    /// Pulls IMAGE and starts it at the IP recorded under ROOT/ips/IMAGE,
    /// else under /assigner/ips/IMAGE (the original IP assigner's key), on
    /// the network `commit` recorded for it (its app's) when that holds the
    /// IP, else on the shared `network`. Refuses an IP that a container
    /// already has.
    Restore {
        /// The snapshot, as `commit` named it: REGISTRY/APP-COMPONENT-IP:TAG
        image: String,
        /// The container's name [default: nap-restored-APP-COMPONENT-IP]
        #[arg(long)]
        name: Option<String>,
    },
    /// Write the CI/CD flow's rollout and undo requests (admin keys only)
    Rollout(rollout::RolloutArgs),
    /// List, add or remove the hosts an app answers at on the router
    Domains(domains::DomainsArgs),
    /// List an app's HTTPS certificates; add one (PEM on standard input) or remove one
    Certs(certs::CertsArgs),
    /// Show or set whether plain HTTP to an app is redirected to HTTPS
    Https {
        app: String,
        /// force: 308 to HTTPS where a certificate exists; off: serve both
        mode: Option<certs::HttpsMode>,
    },
    /// Show or set whether nap orders and renews the app's certificates over ACME (Let's Encrypt)
    Letsencrypt {
        app: String,
        /// on: order a certificate now and renew it; off: stop renewing
        switch: Option<certs::Switch>,
    },
    /// Print nap's version
    Version,
    /// Receive a push (run by `git push`)
    #[command(name = "git-receive-pack")]
    GitReceivePack { repo: String },
    /// Send an app's repo (run by `git clone` and `git fetch`)
    #[command(name = "git-upload-pack")]
    GitUploadPack { repo: String },
}

impl Operate {
    /// Whether the command reads its standard input. Over SSH, the input of
    /// a command that does not is read and dropped, so that the client's
    /// going away is still seen however much it sends (`logs --follow`).
    pub fn reads_input(&self) -> bool {
        match self {
            Operate::GitReceivePack { .. } | Operate::GitUploadPack { .. } | Operate::Import(_) | Operate::Run(_) => {
                true
            }
            Operate::Keys(args) => args.reads_input(),
            Operate::Certs(args) => args.reads_input(),
            Operate::Apps(_)
            | Operate::Ps(_)
            | Operate::Logs { .. }
            | Operate::Config(_)
            | Operate::Limits(_)
            | Operate::Placement(_)
            | Operate::Releases { .. }
            | Operate::Rollback { .. }
            | Operate::Restart { .. }
            | Operate::Manage(_)
            | Operate::Commit { .. }
            | Operate::Takeover { .. }
            | Operate::Restore { .. }
            | Operate::Rollout(_)
            | Operate::Domains(_)
            | Operate::Https { .. }
            | Operate::Letsencrypt { .. }
            | Operate::Version => false,
        }
    }
}

/// `--json`, which every command takes.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print JSON for scripts
    #[arg(long, global = true)]
    pub json: bool,
}

/// What a command answers on success.
pub enum Reply {
    /// Text for people and JSON for `--json`; one of them is printed.
    Answer { text: String, json: serde_json::Value },
    /// The command wrote its output as it went (`logs`).
    Streamed,
    /// The command wrote its output as it went, and ends with this exit
    /// status (`run`: the one-off's).
    Exited(u32),
}

impl Reply {
    pub fn new(text: impl Into<String>, json: serde_json::Value) -> Reply {
        Reply::Answer { text: text.into(), json }
    }
}

/// Whatever stops a command, as one line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    AppName(#[from] InvalidAppName),
    #[error(transparent)]
    NewAppName(#[from] ReservedAppName),
    #[error("app {0} does not exist")]
    NoSuchApp(AppName),
    #[error("{0} has no release running yet")]
    NothingRunning(AppName),
    #[error("no router runs in this nap process; `logs --router` reads the router of `nap serve`, over its SSH port")]
    NoRouterHere,
    #[error(
        "logs streams lines as they come and has no --json; the router's lines have a fixed format (see the README)"
    )]
    LogsAreLines,
    #[error(transparent)]
    Scale(nap_runner::ScaleError),
    #[error(transparent)]
    OneOff(#[from] one_off::OneOffError),
    #[error("{0} is scaled twice in one command")]
    ScaleTwice(nap_runner::ProcessType),
    #[error(transparent)]
    Apps(#[from] apps::AppsError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Limits(#[from] limits::LimitsCommandError),
    #[error(transparent)]
    Placement(#[from] nap_runner::ConstraintError),
    #[error(transparent)]
    Rollback(#[from] releases::RollbackError),
    #[error(transparent)]
    Rollout(#[from] rollout::RolloutError),
    #[error(transparent)]
    Commiter(#[from] CommiterError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Domain(#[from] domains::DomainError),
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
    #[error(transparent)]
    Busy(#[from] nap_state::LockError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Run(#[from] nap_runner::RunError),
    #[error(transparent)]
    Build(#[from] nap_builder::BuildError),
}

/// Runs one command for `caller`; answers the exit status.
pub async fn execute(ctx: &Arc<Context>, caller: &Caller, command: Operate, output: OutputArgs, mut io: Io) -> u32 {
    // The command line is in the span (its values masked), never its values here.
    info!(caller = caller.name(), "command");
    let result = match command {
        Operate::GitReceivePack { repo } => return git::receive_pack(ctx, caller, &repo, io).await,
        Operate::GitUploadPack { repo } => return git::upload_pack(ctx, caller, &repo, io).await,
        Operate::Logs { .. } if output.json => Err(CommandError::LogsAreLines),
        Operate::Logs { app, tail, follow, router } => {
            instances::logs(ctx, caller, instances::LogsAsked { app, tail, follow, router }, &mut io).await
        }
        Operate::Version => Ok(Reply::new(
            format!("nap {}", env!("CARGO_PKG_VERSION")),
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
        )),
        Operate::Apps(args) => apps::run(ctx, caller, args, &mut io).await,
        Operate::Ps(args) => instances::run(ctx, caller, args, &mut io).await,
        Operate::Restart { app } => instances::restart(ctx, caller, &app, &mut io).await,
        Operate::Run(args) => one_off::run(ctx, caller, args, &mut io).await,
        Operate::Config(args) => config::run(ctx, caller, args, &mut io).await,
        Operate::Limits(args) => limits::run(ctx, caller, args, &mut io).await,
        Operate::Placement(args) => placement::run(ctx, caller, args, &mut io).await,
        Operate::Releases { app } => releases::list(ctx, caller, &app).await,
        Operate::Rollback { app, version } => {
            Box::pin(releases::rollback(ctx, caller, &app, version.as_deref(), &mut io)).await
        }
        Operate::Keys(args) => keys::run(ctx, caller, args, &mut io).await,
        Operate::Manage(args) => commiter::manage(ctx, caller, args).await,
        Operate::Rollout(args) => rollout::rollout(ctx, caller, args).await,
        Operate::Domains(args) => domains::run(ctx, caller, args).await,
        Operate::Certs(args) => certs::certs(ctx, caller, args, &mut io).await,
        Operate::Https { app, mode } => certs::https(ctx, caller, &app, mode).await,
        Operate::Letsencrypt { app, switch } => certs::letsencrypt(ctx, caller, &app, switch, &mut io).await,
        Operate::Import(args) => commiter::import(ctx, caller, args, &mut io).await,
        Operate::Commit { app } => snapshot::commit(ctx, caller, app.as_deref(), &mut io).await,
        Operate::Takeover { app } => snapshot::takeover(ctx, caller, &app).await,
        Operate::Restore { image, name } => snapshot::restore(ctx, caller, &image, name.as_deref(), &mut io).await,
    };
    match result {
        Ok(Reply::Streamed) => 0,
        Ok(Reply::Exited(status)) => status,
        Ok(Reply::Answer { text, json }) => {
            let text =
                if output.json { serde_json::to_string_pretty(&json).unwrap_or_else(|_| "null".into()) } else { text };
            if !text.is_empty() {
                say(&mut io.stdout, &format!("{}\n", text.trim_end())).await;
            }
            0
        }
        Err(err) => {
            info!(caller = caller.name(), error = %err, "command failed");
            fail(&mut io.stderr, &err.to_string()).await
        }
    }
}

/// Config values as every command's output shows them, unless `config APP
/// --reveal` asks.
pub const MASK: &str = "********";

/// A release as `--json` shows it: its config's values masked.
pub fn release_json(release: &nap_state::Release) -> serde_json::Value {
    let mut json = serde_json::to_value(release).unwrap_or_default();
    if let Some(serde_json::Value::Object(config)) = json.get_mut("config") {
        for value in config.values_mut() {
            *value = serde_json::Value::String(MASK.to_owned());
        }
    }
    json
}

/// An app the caller may use and that exists.
pub async fn existing_app(ctx: &Context, caller: &Caller, name: &str) -> Result<AppName, CommandError> {
    let app = AppName::parse(name)?;
    caller.check_app(&app)?;
    if ctx.store.app(app.as_str()).await?.is_none() {
        return Err(CommandError::NoSuchApp(app));
    }
    Ok(app)
}

/// Runs `work` with a [`Reporter`] on the client's stderr, and waits until
/// every line it reported is written.
pub async fn with_reporter<T, F>(io: &mut Io, work: impl FnOnce(Reporter) -> F) -> T
where
    F: Future<Output = T>,
{
    let stderr = std::mem::replace(&mut io.stderr, Box::new(tokio::io::sink()));
    let (report, writer) = Reporter::spawn(stderr);
    let result = work(report).await;
    if let Ok(stderr) = writer.await {
        io.stderr = stderr;
    }
    result
}

/// Runs a step of the release flow with progress on the client's stderr.
/// A failure's log tail, and what keeps serving, go there too, before the
/// error line.
pub async fn with_flow_reporter<T, F>(io: &mut Io, work: impl FnOnce(Reporter) -> F) -> Result<T, DeployError>
where
    F: Future<Output = Result<T, DeployError>>,
{
    with_reporter(io, |report| async move {
        let result = work(report.clone()).await;
        if let Err(err) = &result {
            err.report(&report);
        }
        result
    })
    .await
}

/// A new release that a command (not a push) makes, through the release flow.
pub async fn deploy(
    ctx: &Context,
    plan: crate::deploy::Deploy,
    io: &mut Io,
) -> Result<nap_state::Release, DeployError> {
    with_flow_reporter(io, |report| async move { Box::pin(crate::deploy::deploy(ctx, plan, &report)).await }).await
}

/// What `config set/unset` and `limits set/unset` change.
#[derive(Debug, Clone, Copy)]
pub enum Changed {
    Config,
    Limits,
}

/// An app's config or limits changed by `caller`: `change` names what
/// changed (`set A, B`). Unless `no_restart` (or the app runs nothing yet),
/// it runs as a new release of the serving image, and the change is only
/// stored once that release runs. Both under the app's deploy lock, so
/// that changes side by side all land.
pub struct AppChange {
    pub changed: Changed,
    pub change: String,
    pub config: crate::deploy::ConfigChange,
    pub limits: crate::deploy::LimitsChange,
    pub no_restart: bool,
}

pub async fn change_app(
    ctx: &Context,
    caller: &Caller,
    app: &AppName,
    change: AppChange,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let AppChange { changed, change, config, limits, no_restart } = change;
    let who = caller.name();
    let (what, cause) = match changed {
        Changed::Config => ("config", ReleaseCause::Config { key: who.to_owned(), change: change.clone() }),
        Changed::Limits => ("limits", ReleaseCause::Limits { key: who.to_owned(), change: change.clone() }),
    };
    let runs = ctx.store.current_release(app.as_str()).await?.is_some();
    if no_restart || !runs {
        let doing = cause.action();
        with_flow_reporter(io, |report| async move {
            crate::deploy::change_app(ctx, app, config, limits, &doing, who, &report).await
        })
        .await?;
        return Ok(Reply::new(
            format!("{app}: {what} {change}; it takes effect with the next release"),
            serde_json::json!({ "name": app.as_str(), "change": change, "release": null }),
        ));
    }
    let plan = crate::deploy::Deploy {
        app: app.clone(),
        who: who.to_owned(),
        cause,
        source: crate::deploy::Source::Current,
        config,
        limits,
    };
    let release = Box::pin(deploy(ctx, plan, io)).await?;
    Ok(Reply::new(
        format!("{app} v{}: {what} {change}, live at {}", release.version, release.url.as_deref().unwrap_or("-")),
        release_json(&release),
    ))
}

async fn say<W: AsyncWrite + Unpin + ?Sized>(out: &mut W, text: &str) {
    let _ = out.write_all(text.as_bytes()).await;
    let _ = out.flush().await;
}

/// Writes the one-line error and answers the failing exit status.
pub async fn fail<W: AsyncWrite + Unpin + ?Sized>(err: &mut W, message: &str) -> u32 {
    say(err, &format!("error: {message}\n")).await;
    1
}
