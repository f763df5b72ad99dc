//! `nap hook pre-receive`: deploy what was pushed to master or main.
//!
//! git runs this before it updates any ref. Exiting non-zero declines the
//! whole push, so a failed build or start check leaves the branch where it
//! was, and the previous release keeps serving because it is only retired
//! after the new one answers.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::Docker;
use nap_builder::{BuildRequest, Builder};
use nap_hooks::RefUpdate;
use nap_runner::{DockerRunner, RunRequest};
use nap_state::{DeployLock, Release, ReleaseCause, ReleaseStatus, Store};
use time::OffsetDateTime;
use tracing::{Instrument, error, info, info_span};

use crate::app_name::AppName;
use crate::settings::Settings;

/// The port apps listen on unless their Dockerfile exposes exactly one.
const DEFAULT_PORT: u16 = 5000;

/// Why a deploy failed; printed to the pusher before git declines the push.
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
    #[error("the pusher disconnected")]
    PusherGone,
    /// A release that failed, with what keeps serving instead.
    #[error("{cause}")]
    Refused { app: AppName, cause: Box<DeployError>, serving: Option<Box<Release>> },
}

impl DeployError {
    fn log_tail(&self) -> &[String] {
        match self {
            DeployError::Build(err) => err.log_tail(),
            DeployError::Run(err) => err.log_tail(),
            DeployError::Refused { cause, .. } => cause.log_tail(),
            _ => &[],
        }
    }
}

/// What the pusher sees, as `remote:` lines (git adds the prefix).
/// Writes go straight to stderr, in order; a failed write means the pusher
/// is gone.
struct Output {
    gone: AtomicBool,
}

impl Output {
    fn line(&self, marker: &str, text: &str) {
        let mut err = std::io::stderr().lock();
        if writeln!(err, "{marker} {text}").and_then(|()| err.flush()).is_err() {
            self.gone.store(true, Ordering::Relaxed);
        }
    }
    fn step(&self, text: &str) {
        self.line("----->", text);
    }
    fn detail(&self, text: &str) {
        self.line("      ", text);
    }
    fn problem(&self, text: &str) {
        self.line(" !    ", text);
    }
    fn check_present(&self) -> Result<(), DeployError> {
        if self.gone.load(Ordering::Relaxed) { Err(DeployError::PusherGone) } else { Ok(()) }
    }
}

/// Entry point; answers the hook's exit status.
pub async fn pre_receive(settings: &Settings) -> i32 {
    let out = Output { gone: AtomicBool::new(false) };
    match run(settings, &out).await {
        Ok(()) => 0,
        Err(err) => {
            error!(error = %err, "deploy failed");
            out.problem(&err.to_string());
            for line in err.log_tail() {
                out.problem(line);
            }
            if let DeployError::Refused { app, serving: Some(current), .. } = &err {
                out.problem(&format!(
                    "{app} keeps serving v{} at {}",
                    current.version,
                    current.url.as_deref().unwrap_or("its old address")
                ));
            }
            1
        }
    }
}

async fn run(settings: &Settings, out: &Output) -> Result<(), DeployError> {
    let app = std::env::var("NAP_APP")
        .map_err(|_| DeployError::Usage("NAP_APP is not set; pushes must go through nap".into()))
        .and_then(|name| AppName::parse(&name).map_err(|e| DeployError::Usage(e.to_string())))?;
    let pusher = std::env::var("NAP_KEY").unwrap_or_else(|_| "unknown".into());
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| DeployError::Usage(format!("reading the ref updates from git: {e}")))?;
    let updates = nap_hooks::parse_ref_updates(&input).map_err(|e| DeployError::Usage(e.to_string()))?;

    for update in updates.iter().filter(|u| !u.deploys()) {
        match update.branch() {
            Some(branch) if update.is_delete() => out.step(&format!("Branch {branch} deleted; nothing deployed")),
            Some(branch) => out.step(&format!("Branch {branch} stored, not deployed: only master and main deploy")),
            None => out.step(&format!("{} stored, not deployed", update.refname)),
        }
    }
    // If master and main both arrive in one push, the last one listed wins.
    let Some(update) = updates.iter().rev().find(|u| u.deploys()) else { return Ok(()) };

    let span = info_span!("deploy", %app, commit = %short(&update.new), key = %pusher);
    deploy(settings, out, &app, update, &pusher).instrument(span).await
}

async fn deploy(
    settings: &Settings,
    out: &Output,
    app: &AppName,
    update: &RefUpdate,
    pusher: &str,
) -> Result<(), DeployError> {
    let holder = format!(
        "push of {} by {pusher}, pid {}, started {}",
        short(&update.new),
        std::process::id(),
        OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    );
    let _lock = DeployLock::try_acquire(&settings.locks_dir(), app.as_str(), &holder)?;
    let store = Store::open_embedded(&settings.store_path())?;
    fail_interrupted_releases(&store, app).await?;

    let version = store.next_release_version(app.as_str()).await?;
    let mut release = Release {
        version,
        commit: update.new.clone(),
        image: String::new(),
        created_at: OffsetDateTime::now_utc(),
        status: ReleaseStatus::Pending,
        cause: ReleaseCause::Push { key: pusher.to_owned() },
        container: None,
        url: None,
        error: None,
    };
    store.save_release(app.as_str(), &release).await?;
    out.step(&format!("Deploying {app} v{version} from {} (pushed by {pusher})", short(&update.new)));

    match build_and_start(settings, out, app, &mut release).await {
        Ok(runner) => {
            release.status = ReleaseStatus::Succeeded;
            store.promote_release(app.as_str(), &release).await?;
            let container = release.container.clone().unwrap_or_default();
            match runner.retire_all_but(app.as_str(), &container).await {
                Ok(retired) if !retired.is_empty() => out.step(&format!("Retired {}", retired.join(", "))),
                Ok(_) => {}
                Err(err) => out.problem(&format!("could not retire the previous release: {err}")),
            }
            let url = release.url.clone().unwrap_or_default();
            info!(version, %url, "deployed");
            out.step(&format!("{app} v{version} is live"));
            out.line("=====>", &url);
            Ok(())
        }
        Err(err) => {
            release.status = ReleaseStatus::Failed;
            release.error = Some(err.to_string());
            store.save_release(app.as_str(), &release).await?;
            let serving = store.current_release(app.as_str()).await?.map(Box::new);
            Err(DeployError::Refused { app: app.clone(), cause: Box::new(err), serving })
        }
    }
}

/// Builds the image and starts it; fills in the release as it goes.
async fn build_and_start(
    settings: &Settings,
    out: &Output,
    app: &AppName,
    release: &mut Release,
) -> Result<DockerRunner, DeployError> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(DeployError::DockerUnreachable)?
        .negotiate_version()
        .await
        .map_err(DeployError::DockerUnreachable)?;
    let builder = Builder::new(docker.clone(), settings.registry.clone());
    let repo = std::env::current_dir().map_err(|e| DeployError::Usage(format!("no repo directory: {e}")))?;
    let detail = |line: &str| out.detail(line);

    out.step(&format!("Building {}:v{}", builder.repository(app.as_str()), release.version));
    let image = builder
        .build(
            &BuildRequest { app: app.as_str(), repo: &repo, commit: &release.commit, release: release.version },
            &detail,
        )
        .await?;
    release.image = image.reference.clone();
    out.check_present()?;

    let port = match image.exposed_ports.as_slice() {
        [port] => *port,
        _ => DEFAULT_PORT,
    };
    out.step(&format!("Releasing v{} with PORT={port}", release.version));
    let runner = DockerRunner::new(docker, settings.public_host.clone(), settings.check_timeout);
    let running = runner
        .start(
            &RunRequest { app: app.as_str(), release: release.version, image: &image.reference, port, env: &[] },
            &detail,
        )
        .await?;
    release.container = Some(running.container);
    release.url = Some(running.url);
    Ok(runner)
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

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
