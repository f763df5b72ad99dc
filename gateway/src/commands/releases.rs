//! `releases` and `rollback`, and the way every command-made release runs.

use std::fmt::Write as _;

use nap_builder::short_commit;
use nap_state::{ReleaseCause, ReleaseStatus};
use time::format_description::well_known::Rfc3339;

use super::{CommandError, Reply, existing_app};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy::{Deploy, Source};

/// Why `rollback` cannot go where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("{0} has no release to roll back from")]
    NothingCurrent(AppName),
    #[error("{app} has no release v{version}")]
    NoSuchRelease { app: AppName, version: u32 },
    #[error("{0} has no earlier good release to roll back to")]
    NoEarlierGood(AppName),
    #[error("v{version} {}; rollback only goes to a release that ran", if *.failed { "failed" } else { "never finished" })]
    NotRan { version: u32, failed: bool },
    #[error("{0:?} is not a release; name one like v5")]
    NotARelease(String),
}

pub async fn list(ctx: &Context, caller: &Caller, name: &str) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let mut releases = ctx.store.releases(app.as_str()).await?;
    releases.reverse();
    let current = ctx.store.current_release(app.as_str()).await?.map(|r| r.version);
    let mut text =
        format!("{:<6} {:<10} {:<20} {:<8} {:<40} {}\n", "", "STATUS", "CREATED", "COMMIT", "IMAGE", "CAUSE");
    for release in &releases {
        let marker = if Some(release.version) == current { "*" } else { "" };
        let _ = writeln!(
            text,
            "{:<6} {:<10} {:<20} {:<8} {:<40} {}",
            format!("v{}{marker}", release.version),
            status_name(release.status),
            release.created_at.format(&Rfc3339).unwrap_or_default().get(..19).unwrap_or_default(),
            short_commit(&release.commit),
            release.image,
            release.cause,
        );
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
        return Err(RollbackError::NothingCurrent(app).into());
    };
    let target = match version {
        Some(text) => {
            let number = parse_version(text)?;
            store
                .release(app.as_str(), number)
                .await?
                .ok_or_else(|| RollbackError::NoSuchRelease { app: app.clone(), version: number })?
        }
        None => store
            .releases(app.as_str())
            .await?
            .into_iter()
            .rev()
            .find(|r| r.version < current.version && r.status == ReleaseStatus::Succeeded)
            .ok_or_else(|| RollbackError::NoEarlierGood(app.clone()))?,
    };
    if target.status != ReleaseStatus::Succeeded {
        return Err(
            RollbackError::NotRan { version: target.version, failed: target.status == ReleaseStatus::Failed }.into()
        );
    }
    let plan = Deploy {
        app: app.clone(),
        who: caller.name().to_owned(),
        cause: ReleaseCause::Rollback { key: caller.name().to_owned(), to: target.version },
        source: Source::Image { commit: target.commit.clone(), image: target.image.clone(), port: target.port },
        config: Some(target.config.clone()),
    };
    let release = super::deploy(ctx, plan, io).await?;
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

fn parse_version(text: &str) -> Result<u32, CommandError> {
    text.strip_prefix('v').unwrap_or(text).parse().map_err(|_| RollbackError::NotARelease(text.to_owned()).into())
}

fn status_name(status: ReleaseStatus) -> &'static str {
    match status {
        ReleaseStatus::Pending => "pending",
        ReleaseStatus::Succeeded => "succeeded",
        ReleaseStatus::Failed => "failed",
    }
}
