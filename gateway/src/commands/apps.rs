//! `apps`, `apps create APP`, `apps destroy APP --force`.

use clap::{Args, Subcommand};
use nap_state::AppRecord;
use serde_json::json;
use time::OffsetDateTime;

use super::table::Table;
use super::{CommandError, Reply, existing_app};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::repos;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AppsArgs {
    #[command(subcommand)]
    command: Option<AppsCommand>,
}

#[derive(Debug, Subcommand)]
enum AppsCommand {
    /// Create an app before its first push
    Create { app: String },
    /// Remove an app's containers, repo and state
    Destroy {
        app: String,
        /// Really destroy it
        #[arg(long)]
        force: bool,
    },
}

/// Why an app cannot be created or destroyed as asked.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("app {0} already exists")]
    Exists(AppName),
    #[error("destroying {0} removes its containers, repo and state for good; run again with --force")]
    NeedsForce(AppName),
    #[error("cannot create the repo of {app}: {source}")]
    Repo {
        app: AppName,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(ctx: &Context, caller: &Caller, args: AppsArgs, _io: &mut Io) -> Result<Reply, CommandError> {
    match args.command {
        None => list(ctx, caller).await,
        Some(AppsCommand::Create { app }) => create(ctx, caller, &app).await,
        Some(AppsCommand::Destroy { app, force }) => destroy(ctx, caller, &app, force).await,
    }
}

async fn list(ctx: &Context, caller: &Caller) -> Result<Reply, CommandError> {
    let apps: Vec<_> = ctx
        .store
        .apps()
        .await?
        .into_iter()
        .filter(|a| AppName::parse(&a.record.name).is_ok_and(|name| caller.may_use(&name)))
        .collect();
    // One call for all apps' states.
    let instances = match ctx.runner().await {
        Ok(runner) => runner.instances(None).await.unwrap_or_default(),
        Err(_) => std::collections::HashMap::default(),
    };
    let mut table = Table::new(&["APP", "RELEASE", "STATE", "URL"]);
    let mut rows = Vec::new();
    for app in &apps {
        let current = app.current.as_ref();
        let state = match (current, instances.get(&app.record.name)) {
            (None, _) => "new".to_owned(),
            (Some(release), Some(found)) => found
                .iter()
                .find(|i| i.release == release.version)
                .map_or_else(|| "missing".to_owned(), |i| i.state.clone()),
            (Some(_), None) => "stopped".to_owned(),
        };
        let release = current.map_or_else(|| "-".to_owned(), |r| format!("v{}", r.version));
        let url = current.and_then(|r| r.url.clone()).unwrap_or_else(|| "-".into());
        table.row(&[&app.record.name, &release, &state, &url]);
        rows.push(json!({
            "name": app.record.name,
            "created_at": app.record.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "created_by": app.record.created_by,
            "release": current.map(|r| r.version),
            "state": state,
            "url": current.and_then(|r| r.url.clone()),
        }));
    }
    let text = if apps.is_empty() {
        "no apps yet; create one with `apps create APP` or by pushing to it".into()
    } else {
        table.into_text()
    };
    Ok(Reply::new(text, json!(rows)))
}

async fn create(ctx: &Context, caller: &Caller, name: &str) -> Result<Reply, CommandError> {
    let app = AppName::parse(name)?;
    caller.check_app(&app)?;
    app.check_new()?;
    let record = AppRecord {
        name: app.to_string(),
        created_at: OffsetDateTime::now_utc(),
        created_by: caller.name().to_owned(),
    };
    if !ctx.store.create_app(&record).await? {
        return Err(AppsError::Exists(app).into());
    }
    // Kept: an app made by `apps create` has its (empty) repo.
    let settings = &ctx.settings;
    repos::Hold::open(&settings.repos_dir(), &settings.locks_dir(), &app, &ctx.exe)
        .map_err(|source| AppsError::Repo { app: app.clone(), source })?;
    Ok(Reply::new(
        format!("created {app}; deploy it with: git push {}/{app} master", ctx.settings.git_remote()),
        json!({ "name": app.as_str(), "created": true }),
    ))
}

async fn destroy(ctx: &Context, caller: &Caller, name: &str, force: bool) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    if !force {
        return Err(AppsError::NeedsForce(app).into());
    }
    let destroyed = crate::deploy::destroy(ctx, &app, caller.name()).await?;
    let containers = &destroyed.containers;
    let (images, tags, kept) = match &destroyed.images {
        Ok(tags) => (format!("{} local image tag(s)", tags.len()), tags.as_slice(), None),
        Err(err) => ("no image".to_owned(), &[][..], Some(err.to_string())),
    };
    let part = destroyed.runner.part();
    let mut text = format!(
        "destroyed {app} (removed {} {part}(s), {images}, its repo and its state; the registry keeps its copies)",
        containers.len()
    );
    if let Some(why) = &kept {
        text.push_str("\nits local images stay: ");
        text.push_str(why);
    }
    Ok(Reply::new(
        text,
        json!({ "name": app.as_str(), "destroyed": true, "containers": containers, "images": tags, "images_kept": kept }),
    ))
}
