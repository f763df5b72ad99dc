//! `nap hook pre-receive`: deploy what was pushed to master or main.
//!
//! git runs this before it updates any ref. Exiting non-zero declines the
//! whole push, so a failed build or start check leaves the branch where it
//! was, and the previous release keeps serving.

use std::io::Read;

use nap_builder::{BuildRequest, Builder};
use nap_hooks::RefUpdate;
use nap_state::{AppRecord, LockSubject, ReleaseCause};
use time::OffsetDateTime;
use tracing::{Instrument, error, info_span};

use crate::app_name::AppName;
use crate::context::Context;
use crate::deploy::{self, DEFAULT_PORT, DeployError, NewRelease, short};
use crate::report::Reporter;

/// Entry point; answers the hook's exit status.
pub async fn pre_receive(ctx: &Context) -> i32 {
    let (report, writer) = Reporter::spawn(tokio::io::stderr());
    let result = run(ctx, &report).await;
    if let Err(err) = &result {
        error!(error = %err, "deploy failed");
        report.problem(&err.to_string());
        err.report(&report);
    }
    drop(report);
    let _ = writer.await;
    if result.is_ok() { 0 } else { 1 }
}

async fn run(ctx: &Context, report: &Reporter) -> Result<(), DeployError> {
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
            Some(branch) if update.is_delete() => report.step(&format!("Branch {branch} deleted; nothing deployed")),
            Some(branch) => report.step(&format!("Branch {branch} stored, not deployed: only master and main deploy")),
            None => report.step(&format!("{} stored, not deployed", update.refname)),
        }
    }
    // If master and main both arrive in one push, the last one listed wins.
    let Some(update) = updates.iter().rev().find(|u| u.deploys()) else { return Ok(()) };

    let span = info_span!("deploy", %app, commit = %short(&update.new), key = %pusher);
    deploy_push(ctx, report, &app, update, &pusher).instrument(span).await
}

async fn deploy_push(
    ctx: &Context,
    report: &Reporter,
    app: &AppName,
    update: &RefUpdate,
    pusher: &str,
) -> Result<(), DeployError> {
    let what = format!("push of {}", short(&update.new));
    let _lock = ctx.lock(LockSubject::Deploy { app: app.as_str() }, &what, pusher).await?;
    let store = &ctx.store;
    let first_push = store.app(app.as_str()).await?.is_none();
    let result = build_and_release(ctx, report, app, update, pusher).await;
    match &result {
        Ok(()) if first_push => {
            let record = AppRecord {
                name: app.to_string(),
                created_at: OffsetDateTime::now_utc(),
                created_by: pusher.to_owned(),
            };
            store.create_app(&record).await?;
        }
        // A refused first push leaves nothing behind: the gateway removes
        // the repo, and the app's state goes here.
        Err(_) if first_push => store.destroy_app(app.as_str()).await?,
        _ => {}
    }
    result
}

async fn build_and_release(
    ctx: &Context,
    report: &Reporter,
    app: &AppName,
    update: &RefUpdate,
    pusher: &str,
) -> Result<(), DeployError> {
    let store = &ctx.store;
    let config = store.config(app.as_str()).await?;
    let release = deploy::open_release(
        store,
        app,
        NewRelease {
            commit: update.new.clone(),
            image: String::new(),
            port: DEFAULT_PORT,
            config,
            cause: ReleaseCause::Push { key: pusher.to_owned() },
        },
    )
    .await?;
    report.step(&format!("Deploying {app} v{} from {} (pushed by {pusher})", release.version, short(&update.new)));
    // Before the build, so a runner that cannot work (no systemd on the bus,
    // no registry for Kubernetes) refuses the push without building.
    let runner = match ctx.runner().await {
        Ok(runner) => runner,
        Err(err) => return deploy::fail_release(store, app, release, err).await.map(|_| ()),
    };

    let built = async {
        let docker = ctx.docker().await?;
        let builder = Builder::new(docker, ctx.settings.registry.clone());
        let repo = std::env::current_dir().map_err(|e| DeployError::Usage(format!("no repo directory: {e}")))?;
        report.step(&format!("Building {}:v{}", builder.repository(app.as_str()), release.version));
        let detail = |line: &str| report.detail(line);
        let request = BuildRequest { app: app.as_str(), repo: &repo, commit: &update.new, release: release.version };
        let image = builder.build(&request, &detail).await?;
        if report.reader_gone() {
            return Err(DeployError::ClientGone);
        }
        Ok(image)
    }
    .await;
    let image = match built {
        Ok(image) => image,
        Err(err) => return deploy::fail_release(store, app, release, err).await.map(|_| ()),
    };
    let release = nap_state::Release {
        image: image.reference.clone(),
        port: match image.exposed_ports.as_slice() {
            [port] => *port,
            _ => DEFAULT_PORT,
        },
        ..release
    };
    let release = deploy::start_release(ctx, &runner, app, release, report).await?;
    report.step(&format!("{app} v{} is live", release.version));
    report.line("=====>", release.url.as_deref().unwrap_or_default());
    Ok(())
}
