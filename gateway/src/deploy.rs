//! The release flow: every new release goes through [`deploy`], whatever
//! made it (a push, a config change, a rollback): take the app's deploy
//! lock, record release vN as pending, build it (a push), start it, wait
//! until it answers, make it current, then retire the previous one. If any
//! step fails, the release is recorded as failed and the previous one goes
//! on serving untouched. A release runs its Procfile's `release:` command
//! first ([`release_phase`]), then every instance its formation asks for
//! ([`processes`]), side by side. [`restart`], [`scale()`] and [`destroy`] act
//! on what serves, under the same lock. An app's deploy lock is taken here
//! and nowhere else.

pub(crate) mod processes;
mod release_phase;
mod scale;

pub use scale::scale;

use std::collections::BTreeMap;
use std::path::PathBuf;

use nap_builder::{BuildRequest, Builder, short_commit};
use nap_runner::{
    AppJson, AppJsonError, Formation, HealthCheck, InstanceId, LimitName, Limits, Procfile, ProcfileError,
};
use nap_runner::{RunError, Runner, Running, Serving};
use nap_state::{AppRecord, Lock, LockSubject, Release, ReleaseCause, ReleaseStatus, Rollout, Store, layout};
use time::OffsetDateTime;
use tracing::info;

use crate::app_name::AppName;
use crate::context::{Context, ContextError};
use crate::lifeline::Lifeline;
use crate::report::Reporter;
use crate::repos;
use crate::router::presence::Presence;
use processes::{Processes, env_of};

/// The port apps listen on unless their Dockerfile exposes exactly one.
pub const DEFAULT_PORT: u16 = 5000;
/// How long a config change, rollback or restart waits for the deploy that
/// holds the app's lock; a push is refused at once instead.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Why a deploy failed; printed before the push or command is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Lock(#[from] nap_state::LockError),
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Build(#[from] nap_builder::BuildError),
    #[error("start failed: {0}")]
    Run(#[from] RunError),
    #[error(transparent)]
    Restart(RunError),
    #[error("{0} has no release running yet")]
    NothingRunning(AppName),
    #[error("removing the repo of {app}: {source}")]
    RemoveRepo {
        app: AppName,
        #[source]
        source: std::io::Error,
    },
    #[error("the client disconnected")]
    ClientGone,
    #[error("the gateway that ran this push is gone, and the pusher was told it failed; nothing of it is made current")]
    GatewayGone,
    #[error(transparent)]
    Procfile(#[from] ProcfileError),
    #[error(transparent)]
    AppJson(#[from] AppJsonError),
    #[error("the release phase exited with code {code}")]
    ReleasePhase { code: i64, log_tail: Vec<String> },
    #[error("the release phase took longer than {seconds} s (release_timeout) and was stopped")]
    ReleasePhaseTimeout { seconds: u64 },
    #[error(transparent)]
    Scale(#[from] scale::ScaleRefused),
    #[error(transparent)]
    Network(#[from] crate::networks::NetworkError),
    /// A release that failed, with what keeps serving instead.
    #[error("{cause}")]
    Refused { app: AppName, cause: Box<DeployError>, serving: Option<Box<Release>> },
}

impl DeployError {
    /// The last lines of the build or app log, to show under the error.
    pub fn log_tail(&self) -> &[String] {
        match self {
            DeployError::Build(err) => err.log_tail(),
            DeployError::Run(err) | DeployError::Restart(err) => err.log_tail(),
            DeployError::ReleasePhase { log_tail, .. } => log_tail,
            DeployError::Refused { cause, .. } => cause.log_tail(),
            _ => &[],
        }
    }

    /// Reports the error's details: the log tail and what keeps serving.
    pub fn report(&self, report: &Reporter) {
        for line in self.log_tail() {
            report.problem(line);
        }
        if let DeployError::Refused { app, serving: Some(current), .. } = self {
            report.problem(&format!(
                "{app} keeps serving v{} at {}",
                current.version,
                current.url.as_deref().unwrap_or("its old address")
            ));
        }
    }
}

/// What a new release runs.
#[derive(Debug, Clone)]
pub enum Source {
    /// A pushed commit, built from its tree in the app's repo; `gateway` is
    /// the process the pusher waits on, which must still live when the
    /// release is made current.
    Push { commit: String, repo: PathBuf, gateway: Option<Lifeline> },
    /// What an earlier release ran: its image, port, Procfile and app.json.
    Release(Box<Release>),
    /// The image of the release that serves when the lock is taken (a
    /// config change: read under the lock, so a push that just ended is
    /// not undone).
    Current,
}

/// What a new release does to the app's config. Applied to the config as
/// it is once the lock is taken, so that changes made side by side all
/// land, one after the other.
#[derive(Debug, Clone)]
pub enum ConfigChange {
    /// The config as it is (a push).
    Keep,
    Set(Vec<(String, String)>),
    Unset(Vec<String>),
    /// Another config whole (a rollback).
    Replace(BTreeMap<String, String>),
}

impl ConfigChange {
    fn apply(self, mut config: BTreeMap<String, String>) -> BTreeMap<String, String> {
        match self {
            ConfigChange::Keep => config,
            ConfigChange::Set(pairs) => {
                config.extend(pairs);
                config
            }
            ConfigChange::Unset(keys) => {
                for key in &keys {
                    config.remove(key);
                }
                config
            }
            ConfigChange::Replace(config) => config,
        }
    }
}

/// A change to the app's limits, made once the lock is taken, as with
/// [`ConfigChange`].
#[derive(Debug, Clone)]
pub enum LimitsChange {
    /// The limits as they are.
    Keep,
    /// These limits set (the others as they are).
    Set(Limits),
    /// These limits removed.
    Unset(Vec<LimitName>),
}

impl LimitsChange {
    fn apply(self, mut limits: Limits) -> Limits {
        match self {
            LimitsChange::Keep => limits,
            LimitsChange::Set(set) => limits.overlaid_with(set),
            LimitsChange::Unset(names) => {
                for name in names {
                    limits.unset(name);
                }
                limits
            }
        }
    }
}

/// One new release to make.
#[derive(Debug, Clone)]
pub struct Deploy {
    pub app: AppName,
    /// The key (or `admin`) it is made for.
    pub who: String,
    pub cause: ReleaseCause,
    pub source: Source,
    /// The environment it runs with, stored as the app's config once it
    /// serves (unless kept as it is).
    pub config: ConfigChange,
    /// What its instances may use, stored as the app's limits once it
    /// serves (unless kept as they are).
    pub limits: LimitsChange,
}

impl Deploy {
    /// What the lock says is going on.
    fn what(&self) -> String {
        match &self.source {
            Source::Push { commit, .. } => format!("push of {}", short_commit(commit)),
            Source::Release(_) | Source::Current => self.cause.action(),
        }
    }
}

/// The release flow. Answers the new current release, or why there is none.
pub async fn deploy(ctx: &Context, plan: Deploy, report: &Reporter) -> Result<Release, DeployError> {
    // A push is refused at once while the app deploys; anything else waits.
    let waits = (!matches!(plan.source, Source::Push { .. })).then_some(report);
    let lock = app_lock(ctx, &plan.app, &plan.what(), &plan.who, waits).await?;
    let store = &ctx.store;
    let app = plan.app.clone();
    let new_app = store.app(app.as_str()).await?.is_none();
    // Changed config and limits are stored once the release serves.
    let (who, store_config) = (plan.who.clone(), !matches!(plan.config, ConfigChange::Keep));
    let store_limits = !matches!(plan.limits, LimitsChange::Keep);
    let limits = plan.limits.clone().apply(store.limits(app.as_str()).await?);
    let result = Box::pin(release(ctx, plan, limits, &lock, report)).await;
    match &result {
        Ok(release) => {
            if new_app {
                let record =
                    AppRecord { name: app.to_string(), created_at: OffsetDateTime::now_utc(), created_by: who };
                store.create_app(&record).await?;
            }
            // The next push runs with the configuration that serves now.
            if store_config {
                store.save_config(app.as_str(), &release.config).await?;
            }
            if store_limits {
                store.save_limits(app.as_str(), &limits).await?;
            }
        }
        // A refused first push leaves nothing behind: the gateway removes
        // the repo, and the app's network and state go here.
        Err(_) if new_app => {
            if let Ok(runner) = ctx.runner().await {
                crate::networks::remove(&runner, app.as_str()).await;
            }
            store.destroy_app(app.as_str()).await?;
        }
        Err(_) => {}
    }
    result
}

/// Open, build, start, promote, retire; under the lock.
async fn release(
    ctx: &Context,
    plan: Deploy,
    limits: Limits,
    lock: &Lock,
    report: &Reporter,
) -> Result<Release, DeployError> {
    let Deploy { app, who, cause, source, config, limits: _ } = plan;
    let hold = Hold {
        lock,
        gateway: match &source {
            Source::Push { gateway, .. } => *gateway,
            Source::Release(_) | Source::Current => None,
        },
    };
    let store = &ctx.store;
    fail_interrupted_releases(store, &app).await?;
    let config = config.apply(store.config(app.as_str()).await?);
    let source = match source {
        Source::Current => match store.current_release(app.as_str()).await? {
            Some(current) => Source::Release(Box::new(current)),
            None => return Err(DeployError::NothingRunning(app)),
        },
        source => source,
    };
    let (commit, image, port, procfile, app_json) = match &source {
        Source::Push { commit, .. } => (commit.clone(), String::new(), DEFAULT_PORT, None, None),
        Source::Release(earlier) => (
            earlier.commit.clone(),
            earlier.image.clone(),
            earlier.port,
            earlier.procfile.clone(),
            earlier.app_json.clone(),
        ),
        Source::Current => return Err(DeployError::NothingRunning(app)),
    };
    let release = Release {
        version: store.next_release_version(app.as_str()).await?,
        commit,
        image,
        procfile,
        app_json,
        created_at: OffsetDateTime::now_utc(),
        status: ReleaseStatus::Pending,
        cause,
        port,
        config,
        workload: None,
        restarts: 0,
        url: None,
        error: None,
    };
    store.save_release(app.as_str(), &release).await?;
    match &source {
        Source::Push { commit, .. } => report.step(&format!(
            "Deploying {app} v{} from {} (pushed by {who})",
            release.version,
            short_commit(commit)
        )),
        Source::Release(_) | Source::Current => {
            report.step(&format!("{app} v{}: {}", release.version, release.cause));
        }
    }
    // A push's Procfile and app.json, read before the build, so a malformed
    // one refuses it at once.
    let release = match &source {
        Source::Push { commit, repo, .. } => match pushed_files(repo, commit) {
            Ok((procfile, app_json)) => Release { procfile, app_json, ..release },
            Err(err) => return fail_release(store, &app, release, err).await,
        },
        Source::Release(_) | Source::Current => release,
    };
    // Before the build, so a runner that cannot work (no systemd on the bus,
    // no registry for Kubernetes) refuses the push without building.
    let runner = match ctx.runner().await {
        Ok(runner) => runner,
        Err(err) => return fail_release(store, &app, release, err.into()).await,
    };
    let release = match &source {
        Source::Push { commit, repo, .. } => match build(ctx, &app, commit, repo, release.version, report).await {
            Ok(image) => Release {
                image: image.reference,
                port: match image.exposed_ports.as_slice() {
                    [port] => *port,
                    _ => DEFAULT_PORT,
                },
                ..release
            },
            Err(err) => return fail_release(store, &app, release, err).await,
        },
        Source::Release(_) | Source::Current => release,
    };
    let release = start_release(ctx, &runner, &app, release, limits, &hold, report).await?;
    if let Source::Push { .. } = source {
        report.step(&format!("{app} v{} is live", release.version));
        report.line("=====>", release.url.as_deref().unwrap_or_default());
    }
    Ok(release)
}

/// Builds the pushed commit's tree into the release's image.
async fn build(
    ctx: &Context,
    app: &AppName,
    commit: &str,
    repo: &std::path::Path,
    version: u32,
    report: &Reporter,
) -> Result<nap_builder::Image, DeployError> {
    let builder = Builder::new(ctx.docker().await?, ctx.settings.registry());
    report.step(&format!("Building {}:v{version}", builder.repository(app.as_str())));
    let detail = |line: &str| report.detail(line);
    let tree = nap_builder::tree_of(repo, commit)?;
    let recorded = ctx.store.tree_image(app.as_str(), &tree).await?;
    // Cached steps come from the app's own serving image only.
    let serving = ctx.store.current_release(app.as_str()).await?.map(|release| release.image);
    let request = BuildRequest {
        app: app.as_str(),
        repo,
        commit,
        release: version,
        reuse: recorded.as_deref(),
        cache_from: serving.as_deref().filter(|image| !image.is_empty()),
        max_context: ctx.settings.max_push_size(),
        timeout: ctx.settings.build_timeout(),
    };
    let image = builder.build(&request, &detail).await?;
    if !image.reused {
        ctx.store.record_tree_image(app.as_str(), &tree, &image.id).await?;
    }
    if report.reader_gone() {
        return Err(DeployError::ClientGone);
    }
    Ok(image)
}

/// Starts an opened release and makes it current, or records why it failed.
async fn start_release(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    release: Release,
    limits: Limits,
    hold: &Hold<'_>,
    report: &Reporter,
) -> Result<Release, DeployError> {
    let processes = match Processes::of_app(ctx, app.as_str(), &release, runner).await {
        Ok(processes) => processes,
        Err(err) => return fail_release(&ctx.store, app, release, err).await,
    };
    if let Err(err) = release_phase::run(ctx, runner, app, &release, &processes, limits, report).await {
        return fail_release(&ctx.store, app, release, err).await;
    }
    let formation: Formation = ctx.store.formation(app.as_str()).await?;
    match start(runner, app, &release, &processes, &formation, limits, report).await {
        Ok(started) => switch(ctx, runner, app, release, &started, hold, report).await,
        Err(err) => fail_release(&ctx.store, app, release, err.into()).await,
    }
}

/// What a deploy must still have when it makes a release current.
struct Hold<'a> {
    /// The app's lock: one whose lease was lost (another host may hold the
    /// lock by now) makes nothing current.
    lock: &'a Lock,
    /// A push's gateway: once it is gone, its pusher was told the push
    /// failed, so nothing of it may serve.
    gateway: Option<Lifeline>,
}

impl Hold<'_> {
    async fn ensure(&self) -> Result<(), DeployError> {
        self.lock.ensure_held().await?;
        match self.gateway {
            Some(gateway) if !gateway.is_alive() => Err(DeployError::GatewayGone),
            _ => Ok(()),
        }
    }
}

/// A release's instances, ready, and the check routers keep making of its
/// `web` ones (app.json's, read once with the rest of it).
struct Started {
    instances: Vec<(InstanceId, Running)>,
    check: Option<HealthCheck>,
}

/// Starts every instance of `release` (start number `release.restarts`)
/// that `formation` asks for, with `limits`, and waits until each is ready.
async fn start(
    runner: &Runner,
    app: &AppName,
    release: &Release,
    processes: &Processes,
    formation: &Formation,
    limits: Limits,
    report: &Reporter,
) -> Result<Started, RunError> {
    let counts = processes.counts(formation);
    let said: Vec<String> = counts.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
    report.step(&format!("Releasing v{} with PORT={} ({})", release.version, release.port, said.join(" ")));
    let env = env_of(release);
    let requests: Vec<_> = processes
        .instances(release, formation)
        .into_iter()
        .map(|id| processes.request(app.as_str(), release, &env, limits, id))
        .collect();
    let instances = runner.start_all(&requests, &|line: &str| report.detail(line)).await?;
    Ok(Started { instances, check: processes.app_json.web_check().cloned() })
}

/// Makes `release`, whose instances run as `started`, the app's current
/// release, its `web` instances the only routed ones; drains and retires
/// what served before.
async fn switch(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    mut release: Release,
    started: &Started,
    hold: &Hold<'_>,
    report: &Reporter,
) -> Result<Release, DeployError> {
    let (store, check) = (&ctx.store, started.check.as_ref());
    let started = started.instances.as_slice();
    let web: Vec<&Running> = started.iter().filter(|(id, _)| id.process.is_web()).map(|(_, running)| running).collect();
    release.status = ReleaseStatus::Succeeded;
    release.workload = web.first().copied().or(started.first().map(|(_, running)| running)).map(|r| r.name.clone());
    // Behind the router an app keeps one address, whatever release serves
    // it; a cluster's address is its Service's.
    release.url = match ctx.settings.app_url(app.as_str()) {
        Some(url) if runner.behind_router() => Some(url),
        _ => web.first().map(|running| running.url.clone()),
    };
    let also = published_with(ctx, app, &release, &web, check, report)?;
    let promoted = match hold.ensure().await {
        Ok(()) => store.promote_release(app.as_str(), &release, also).await.map_err(DeployError::from),
        Err(lost) => Err(lost),
    };
    // Answers the instances that served until now, to drain.
    let previous = match promoted {
        Ok(previous) => previous,
        Err(err) => {
            // Unrecorded, the instances must not run either: the app would
            // run something its releases do not show.
            report.problem(&format!("could not record v{}, so it is taken back: {err}", release.version));
            for (id, _) in started {
                if let Err(discard) = runner.discard(app.as_str(), id).await {
                    report.problem(&format!("could not take {} back: {discard}", id.name()));
                }
            }
            // A push whose gateway is gone still holds the lock: its release is
            // its own to record. (One that lost the lock leaves it to the holder.)
            if matches!(err, DeployError::GatewayGone) {
                return fail_release(store, app, release, err).await;
            }
            return Err(err);
        }
    };
    // Routed now, alone: each live router routes to them, and has drained
    // the previous instances, before they are retired and the URL is said.
    // (A cluster's Service is not behind nap's routers.)
    let routed: Vec<String> = if runner.behind_router() {
        web.iter().map(|running| format!("{}:{}", running.host, running.port)).collect()
    } else {
        Vec::new()
    };
    switch_routers(ctx, &routed, &previous, report).await;
    let keep: Vec<InstanceId> = started.iter().map(|(id, _)| id.clone()).collect();
    match runner.retire_all_but(app.as_str(), &keep).await {
        Ok(retired) if !retired.is_empty() => report.step(&format!("Retired {}", retired.join(", "))),
        Ok(_) => {}
        Err(err) => report.problem(&format!("could not retire the previous release: {err}")),
    }
    info!(version = release.version, url = release.url.as_deref().unwrap_or_default(), "released");
    Ok(release)
}

/// Changes the app's config and limits without a release (`--no-restart`,
/// or an app that runs nothing yet), under the deploy lock, which says
/// what is going on (`config set A by alice`) and who does it.
pub async fn change_app(
    ctx: &Context,
    app: &AppName,
    config: ConfigChange,
    limits: LimitsChange,
    what: &str,
    who: &str,
    report: &Reporter,
) -> Result<(), DeployError> {
    let _lock = app_lock(ctx, app, what, who, Some(report)).await?;
    if !matches!(config, ConfigChange::Keep) {
        let config = config.apply(ctx.store.config(app.as_str()).await?);
        ctx.store.save_config(app.as_str(), &config).await?;
    }
    if !matches!(limits, LimitsChange::Keep) {
        let limits = limits.apply(ctx.store.limits(app.as_str()).await?);
        ctx.store.save_limits(app.as_str(), &limits).await?;
    }
    Ok(())
}

/// Restarts the serving release: on a host, a fresh instance of it starts
/// beside the one serving, answers, takes over the routes, and the old one
/// is drained and retired, as in a deploy; it is never restarted in place.
/// On Kubernetes, the workload's own rolling restart does the same.
pub async fn restart(ctx: &Context, app: &AppName, who: &str, report: &Reporter) -> Result<Release, DeployError> {
    let lock = app_lock(ctx, app, "restart", who, Some(report)).await?;
    restart_locked(ctx, app, &lock, report).await
}

/// Sets where the swarm runner places the app's tasks (`placement`), and
/// on the swarm rolls the serving release over to it as [`restart`] does,
/// under the app's lock: a push meanwhile waits, and cannot start by
/// constraints that are then taken back. Answers whether a release was
/// rolled over; when that fails, the swarm is back on the previous
/// constraints, and so is the store.
pub async fn place<T>(
    ctx: &Context,
    app: &AppName,
    placement: &T,
    who: &str,
    report: &Reporter,
) -> Result<bool, DeployError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    let lock = app_lock(ctx, app, "placement", who, Some(report)).await?;
    let rolls = nap_runner::RunnerKind::places_instances(ctx.settings.runner)
        && ctx.store.current_release(app.as_str()).await?.is_some();
    let before: T = ctx.store.placement(app.as_str()).await?;
    ctx.store.save_placement(app.as_str(), placement).await?;
    if rolls && let Err(err) = restart_locked(ctx, app, &lock, report).await {
        ctx.store.save_placement(app.as_str(), &before).await?;
        return Err(err);
    }
    Ok(rolls)
}

async fn restart_locked(ctx: &Context, app: &AppName, lock: &Lock, report: &Reporter) -> Result<Release, DeployError> {
    let release =
        ctx.store.current_release(app.as_str()).await?.ok_or_else(|| DeployError::NothingRunning(app.clone()))?;
    let runner = ctx.runner().await?;
    let serving = Serving { app: app.as_str(), release: release.version };
    if runner.restart_itself(serving, &|line: &str| report.detail(line)).await.map_err(DeployError::Restart)? {
        return Ok(release);
    }
    let fresh = Release { restarts: release.restarts + 1, ..release };
    report.step(&format!("Starting v{} afresh", fresh.version));
    let limits = ctx.store.limits(app.as_str()).await?;
    let processes = Processes::of_app(ctx, app.as_str(), &fresh, &runner).await?;
    let formation: Formation = ctx.store.formation(app.as_str()).await?;
    let started =
        start(&runner, app, &fresh, &processes, &formation, limits, report).await.map_err(DeployError::Restart)?;
    switch(ctx, &runner, app, fresh, &started, &Hold { lock, gateway: None }, report).await
}

/// What `apps destroy` removed.
pub struct Destroyed {
    /// The runner that ran the app.
    pub runner: nap_runner::RunnerKind,
    pub containers: Vec<String>,
    /// The local image tags; `Err` says why they stay (the app is gone anyway).
    pub images: Result<Vec<String>, ImagesKept>,
}

/// Why `apps destroy` left an app's local images.
#[derive(Debug, thiserror::Error)]
pub enum ImagesKept {
    #[error(transparent)]
    NoDocker(#[from] ContextError),
    #[error(transparent)]
    Remove(#[from] nap_builder::BuildError),
}

/// Removes everything the app runs, its repo and its state; answers what
/// was retired.
pub async fn destroy(ctx: &Context, app: &AppName, who: &str) -> Result<Destroyed, DeployError> {
    let lock = app_lock(ctx, app, "destroy", who, None).await?;
    let runner = ctx.runner().await?;
    let containers = runner.retire_all_but(app.as_str(), &[]).await?;
    crate::networks::remove(&runner, app.as_str()).await;
    let images = match ctx.docker().await {
        Ok(docker) => {
            Builder::new(docker, ctx.settings.registry()).remove_images(app.as_str()).await.map_err(ImagesKept::from)
        }
        Err(err) => Err(ImagesKept::from(err)),
    };
    let repo = repos::path(&ctx.settings.repos_dir(), app);
    if repo.exists() {
        std::fs::remove_dir_all(&repo).map_err(|source| DeployError::RemoveRepo { app: app.clone(), source })?;
    }
    ctx.store.destroy_app(app.as_str()).await?;
    // The app is gone, and its lock's key with it.
    lock.forget();
    Ok(Destroyed { runner: runner.kind(), containers, images })
}

/// Waits until every live router routes to `routed` (the new instances'
/// addresses) and no longer sends requests to `previous` (the addresses of
/// the instances just unpublished): each has applied the switch and its
/// requests to them have finished. At most `retire_timeout`; a router that
/// died stops counting when its lease expires.
async fn switch_routers(ctx: &Context, routed: &[String], previous: &[String], report: &Reporter) {
    const POLL: std::time::Duration = std::time::Duration::from_millis(25);
    if previous.is_empty() && routed.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + ctx.settings.retire_timeout();
    let mut said = false;
    loop {
        let routers = match ctx.store.list_json::<Presence>(&layout::routers()).await {
            Ok(routers) => routers,
            Err(err) => {
                report.problem(&format!("cannot read the routers: {err}; going on without waiting"));
                return;
            }
        };
        let behind = |router: &Presence| {
            routed.iter().any(|address| !router.upstreams.contains(address))
                || previous.iter().any(|address| router.upstreams.contains(address))
        };
        let busy: Vec<String> = routers.into_iter().filter(behind).map(|router| router.host).collect();
        if busy.is_empty() {
            return;
        }
        if !said {
            let what =
                if previous.is_empty() { "Routing the new instances" } else { "Draining the previous instances" };
            report.detail(&format!("{what} on the router of {}", busy.join(", ")));
            said = true;
        }
        if tokio::time::Instant::now() >= deadline {
            report.problem(&format!(
                "the router of {} has not switched after {} s; going on anyway",
                busy.join(", "),
                ctx.settings.retire_timeout().as_secs()
            ));
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The app's deploy lock, for `what` by `who`: at once, or refused naming
/// the holder; or, given a `waiting` report, after the deploy that holds it
/// (for `LOCK_WAIT` at most), said there once.
async fn app_lock(
    ctx: &Context,
    app: &AppName,
    what: &str,
    who: &str,
    waiting: Option<&Reporter>,
) -> Result<Lock, DeployError> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(200);
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        let taken = ctx.lock(LockSubject::Deploy { app: app.as_str() }, what, who).await;
        let (Err(nap_state::LockError::Busy { holder, .. }), Some(report)) = (&taken, waiting) else {
            return Ok(taken?);
        };
        if tokio::time::Instant::now() >= deadline {
            return Ok(taken?);
        }
        if !said {
            report.step(&format!("Waiting for {holder} to finish"));
            said = true;
        }
        if report.reader_gone() {
            return Err(DeployError::ClientGone);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the store learns in the same transaction as a new current release:
/// where its `web` instances serve, the check routers keep making of them,
/// and (with `publish_rollout`) the rollout request for it.
fn published_with(
    ctx: &Context,
    app: &AppName,
    release: &Release,
    web: &[&Running],
    check: Option<&HealthCheck>,
    report: &Reporter,
) -> Result<nap_state::Pairs, DeployError> {
    let mut writes: nap_state::Pairs =
        web.iter().flat_map(|running| Endpoint::of(running).keys(app.as_str(), release.version)).collect();
    writes
        .push((layout::healthcheck(app.as_str()), serde_json::to_vec(&check).map_err(nap_state::StoreError::Encode)?));
    if let Some(target) = &ctx.settings.publish_rollout {
        let rollout = Rollout {
            k8s_namespace: ctx.settings.k8s.k8s_namespace.clone().unwrap_or_else(|| "default".into()),
            app_parent: target.project.clone(),
            app_name: app.to_string(),
            image_latest: release.image.clone(),
        };
        let key = layout::k8s_deploy::rollout(&target.project, &target.env);
        report.detail(&format!("Publishing the rollout of {} at {key}", release.image));
        writes.push((key, serde_json::to_vec(&rollout).map_err(nap_state::StoreError::Encode)?));
    }
    Ok(writes)
}

/// The Procfile and app.json of a pushed commit, checked.
fn pushed_files(repo: &std::path::Path, commit: &str) -> Result<(Option<String>, Option<String>), DeployError> {
    let files = nap_builder::app_files(repo, commit)?;
    let procfile = Procfile::of(files.procfile.as_deref())?;
    AppJson::of(files.app_json.as_deref())?.check_against(&procfile)?;
    Ok((files.procfile, files.app_json))
}

/// Records `release` as failed and answers the refusal to report.
async fn fail_release(
    store: &Store,
    app: &AppName,
    mut release: Release,
    err: DeployError,
) -> Result<Release, DeployError> {
    release.status = ReleaseStatus::Failed;
    release.error = Some(err.to_string());
    store.save_release(app.as_str(), &release).await?;
    let serving = store.current_release(app.as_str()).await?.map(Box::new);
    Err(DeployError::Refused { app: app.clone(), cause: Box::new(err), serving })
}

/// Releases left pending by a push that was killed are marked failed; the
/// caller holds the lock, so none of them is still running.
async fn fail_interrupted_releases(store: &Store, app: &AppName) -> Result<(), DeployError> {
    for mut release in store.releases(app.as_str()).await? {
        if release.status == ReleaseStatus::Pending {
            release.status = ReleaseStatus::Failed;
            release.error = Some("interrupted: the push was killed before it finished".into());
            store.save_release(app.as_str(), &release).await?;
        }
    }
    Ok(())
}

/// Where a release serves, as nap publishes it under
/// `/nap/apps/APP/instances/ID/{ip,port,release}` for routers and template
/// hooks. `ID` is the container (or workload) that runs it.
pub(crate) struct Endpoint {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

impl Endpoint {
    /// A container's address on its app's network (docker and systemd
    /// runners), or a cluster's Service.
    pub fn of(running: &Running) -> Endpoint {
        Endpoint { id: running.name.replace('/', "-"), ip: running.host.clone(), port: running.port }
    }

    pub fn keys(&self, app: &str, release: u32) -> Vec<(String, Vec<u8>)> {
        let values = [self.ip.clone(), self.port.to_string(), release.to_string()];
        Self::fields(app, &self.id).into_iter().zip(values).map(|(key, value)| (key, value.into_bytes())).collect()
    }

    /// The keys of instance `id` of `app`: its `ip`, `port` and `release`.
    pub fn fields(app: &str, id: &str) -> Vec<String> {
        ["ip", "port", "release"].into_iter().map(|field| layout::instance_field(app, id, field)).collect()
    }
}
