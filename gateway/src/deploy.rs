//! The release flow: every new release (a push, a config change, a
//! rollback) goes through here. It records release vN as pending, starts it,
//! waits until it answers, makes it current, then retires the previous one.
//! If the start fails, the release is recorded as failed and the previous
//! one goes on serving untouched.

use std::collections::BTreeMap;

use nap_runner::{RunRequest, Runner};
use nap_state::{Release, ReleaseCause, ReleaseStatus, Rollout, Store, layout};
use time::OffsetDateTime;
use tracing::info;

use crate::app_name::AppName;
use crate::context::Context;
use crate::report::Reporter;

/// The port apps listen on unless their Dockerfile exposes exactly one.
pub const DEFAULT_PORT: u16 = 5000;

/// Why a deploy failed; printed before the push or command is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Busy(#[from] nap_state::LockError),
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
    #[error("cannot reach the Docker daemon: {0}")]
    DockerUnreachable(bollard::errors::Error),
    #[error(transparent)]
    Build(#[from] nap_builder::BuildError),
    #[error("start failed: {0}")]
    Run(#[from] nap_runner::RunError),
    #[error("the client disconnected")]
    ClientGone,
    /// A release that failed, with what keeps serving instead.
    #[error("{cause}")]
    Refused { app: AppName, cause: Box<DeployError>, serving: Option<Box<Release>> },
}

impl DeployError {
    /// The last lines of the build or app log, to show under the error.
    pub fn log_tail(&self) -> &[String] {
        match self {
            DeployError::Build(err) => err.log_tail(),
            DeployError::Run(err) => err.log_tail(),
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
pub struct NewRelease {
    pub commit: String,
    pub image: String,
    pub port: u16,
    pub config: BTreeMap<String, String>,
    pub cause: ReleaseCause,
}

/// Takes the next release number and records the release as pending.
/// The caller holds the app's deploy lock.
pub async fn open_release(store: &Store, app: &AppName, new: NewRelease) -> Result<Release, DeployError> {
    fail_interrupted_releases(store, app).await?;
    let release = Release {
        version: store.next_release_version(app.as_str()).await?,
        commit: new.commit,
        image: new.image,
        created_at: OffsetDateTime::now_utc(),
        status: ReleaseStatus::Pending,
        cause: new.cause,
        port: new.port,
        config: new.config,
        container: None,
        host_port: None,
        url: None,
        error: None,
    };
    store.save_release(app.as_str(), &release).await?;
    Ok(release)
}

/// Starts an opened release and makes it current, or records why it failed.
pub async fn start_release(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    mut release: Release,
    report: &Reporter,
) -> Result<Release, DeployError> {
    report.step(&format!("Releasing v{} with PORT={}", release.version, release.port));
    let env: Vec<(String, String)> = release.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let request = RunRequest {
        app: app.as_str(),
        release: release.version,
        image: &release.image,
        port: release.port,
        env: &env,
    };
    let detail = |line: &str| report.detail(line);
    let store = &ctx.store;
    match runner.start(&request, &detail).await {
        Ok(running) => {
            release.status = ReleaseStatus::Succeeded;
            release.container = Some(running.container.clone());
            release.host_port = Some(running.host_port);
            release.url = Some(running.url.clone());
            let (instance, also) = published_with(ctx, runner, app, &release, &running, report)?;
            if let Err(err) = store.promote_release(app.as_str(), &release, also).await {
                // Unrecorded, the release must not serve either: the app would
                // run something its releases do not show.
                report.problem(&format!("could not record v{}, so it is taken back: {err}", release.version));
                if let Err(discard) = runner.discard(app.as_str(), release.version).await {
                    report.problem(&format!("could not take v{} back: {discard}", release.version));
                }
                return Err(err.into());
            }
            match runner.retire_all_but(app.as_str(), Some(release.version)).await {
                Ok(retired) if !retired.is_empty() => report.step(&format!("Retired {}", retired.join(", "))),
                Ok(_) => {}
                Err(err) => report.problem(&format!("could not retire the previous release: {err}")),
            }
            if let Err(err) = store.forget_instances_but(app.as_str(), &instance.id).await {
                report.problem(&format!("could not unpublish the previous instances: {err}"));
            }
            info!(version = release.version, url = release.url.as_deref().unwrap_or_default(), "released");
            Ok(release)
        }
        Err(err) => fail_release(store, app, release, err.into()).await,
    }
}

/// What the store learns in the same transaction as a new current release:
/// where it serves, and (with `publish_rollout`) the rollout request for it.
fn published_with(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    release: &Release,
    running: &nap_runner::Running,
    report: &Reporter,
) -> Result<(Instance, nap_state::Pairs), DeployError> {
    let instance = Instance::of(ctx, runner, running);
    let mut writes = instance.keys(app.as_str(), release.version);
    if let Some(target) = &ctx.settings.publish_rollout {
        let rollout = Rollout {
            k8s_namespace: ctx.settings.kubernetes.namespace.clone().unwrap_or_else(|| "default".into()),
            app_parent: target.project.clone(),
            app_name: app.to_string(),
            image_latest: release.image.clone(),
        };
        let key = layout::k8s_deploy::rollout(&target.project, &target.env);
        report.detail(&format!("Publishing the rollout of {} at {key}", release.image));
        writes.push((key, serde_json::to_vec(&rollout).map_err(nap_state::StoreError::Encode)?));
    }
    Ok((instance, writes))
}

/// Records `release` as failed and answers the refusal to report.
pub async fn fail_release(
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
/// `/nap/apps/APP/instances/ID/{ip,port,release}` for template hooks.
struct Instance {
    id: String,
    ip: String,
    port: u16,
}

impl Instance {
    fn of(ctx: &Context, runner: &Runner, running: &nap_runner::Running) -> Instance {
        // A cluster's address is its Service's; a host's is the host's IP
        // and the port nap published the release on.
        let ip = match runner.kind() {
            nap_runner::RunnerKind::Kubernetes => url_host(&running.url),
            _ => ctx.settings.this_host_ip().unwrap_or_else(|| ctx.settings.public_host.clone()),
        };
        Instance { id: running.container.replace('/', "-"), ip, port: running.host_port }
    }

    fn keys(&self, app: &str, release: u32) -> Vec<(String, Vec<u8>)> {
        [("ip", self.ip.clone()), ("port", self.port.to_string()), ("release", release.to_string())]
            .into_iter()
            .map(|(field, value)| (layout::instance_field(app, &self.id, field), value.into_bytes()))
            .collect()
    }
}

/// The host of `http://HOST[:PORT]/...`.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_owned()
}

pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
