//! `releases` and `rollback`, and the way every command-made release runs.

use nap_state::{LockSubject, Release, ReleaseCause, ReleaseStatus};
use time::format_description::well_known::Rfc3339;

use super::{CommandError, Reply, existing_app, with_reporter};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy::{self, NewRelease, short};

pub async fn list(ctx: &Context, caller: &Caller, name: &str) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let mut releases = ctx.store.releases(app.as_str()).await?;
    releases.reverse();
    let current = ctx.store.current_release(app.as_str()).await?.map(|r| r.version);
    let mut text =
        format!("{:<6} {:<10} {:<20} {:<8} {:<40} {}\n", "", "STATUS", "CREATED", "COMMIT", "IMAGE", "CAUSE");
    for release in &releases {
        let marker = if Some(release.version) == current { "*" } else { "" };
        text.push_str(&format!(
            "{:<6} {:<10} {:<20} {:<8} {:<40} {}\n",
            format!("v{}{marker}", release.version),
            status_name(release.status),
            release.created_at.format(&Rfc3339).unwrap_or_default().get(..19).unwrap_or_default(),
            short(&release.commit),
            release.image,
            release.cause,
        ));
    }
    if releases.is_empty() {
        text = format!("{app} has no releases yet");
    }
    Ok(Reply::new(text, serde_json::to_value(&releases).unwrap_or_default()))
}

pub async fn rollback(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    version: Option<&str>,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let store = &ctx.store;
    let Some(current) = store.current_release(app.as_str()).await? else {
        return Err(CommandError::Usage(format!("{app} has no release to roll back from")));
    };
    let target = match version {
        Some(text) => {
            let number = parse_version(text)?;
            store
                .release(app.as_str(), number)
                .await?
                .ok_or_else(|| CommandError::Usage(format!("{app} has no release v{number}")))?
        }
        None => store
            .releases(app.as_str())
            .await?
            .into_iter()
            .rev()
            .find(|r| r.version < current.version && r.status == ReleaseStatus::Succeeded)
            .ok_or_else(|| CommandError::Usage(format!("{app} has no earlier good release to roll back to")))?,
    };
    if target.status != ReleaseStatus::Succeeded {
        return Err(CommandError::Usage(format!(
            "v{} {}; rollback only goes to a release that ran",
            target.version,
            if target.status == ReleaseStatus::Failed { "failed" } else { "never finished" }
        )));
    }
    let new = NewRelease {
        commit: target.commit.clone(),
        image: target.image.clone(),
        port: target.port,
        config: target.config.clone(),
        cause: ReleaseCause::Rollback { key: caller.name().to_owned(), to: target.version },
    };
    let release = run_release(ctx, caller, &app, new, io).await?;
    // The next push runs with the configuration that is serving now.
    store.save_config(app.as_str(), &release.config).await?;
    Ok(Reply::new(
        format!(
            "{app} v{}: rollback to v{}, live at {}",
            release.version,
            target.version,
            release.url.as_deref().unwrap_or("-")
        ),
        serde_json::to_value(&release).unwrap_or_default(),
    ))
}

/// Runs a release that a command (not a push) made: under the app's deploy
/// lock, with progress on the client's stderr.
pub async fn run_release(
    ctx: &Context,
    caller: &Caller,
    app: &AppName,
    new: NewRelease,
    io: &mut Io,
) -> Result<Release, CommandError> {
    let what = new.cause.to_string();
    let _lock = ctx.lock(LockSubject::Deploy { app: app.as_str() }, &what, caller.name()).await?;
    let runner = ctx.runner().await?;
    let result = with_reporter(io, |report| async move {
        let result = async {
            let release = deploy::open_release(&ctx.store, app, new).await?;
            report.step(&format!("{app} v{}: {what}", release.version));
            deploy::start_release(ctx, &runner, app, release, &report).await
        }
        .await;
        if let Err(err) = &result {
            err.report(&report);
        }
        result
    })
    .await;
    Ok(result?)
}

fn parse_version(text: &str) -> Result<u32, CommandError> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse()
        .map_err(|_| CommandError::Usage(format!("{text:?} is not a release; name one like v5")))
}

fn status_name(status: ReleaseStatus) -> &'static str {
    match status {
        ReleaseStatus::Pending => "pending",
        ReleaseStatus::Succeeded => "succeeded",
        ReleaseStatus::Failed => "failed",
    }
}
