//! `releases` and `rollback`, and the way every command-made release runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nap_builder::short_commit;
use nap_state::{ReleaseCause, ReleaseStatus};
use time::format_description::well_known::Rfc3339;

use super::table::Table;
use super::{CommandError, Reply, existing_app};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy::{ConfigChange, Deploy, Source};

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
    let mut table = Table::new(&["RELEASE", "STATUS", "CREATED", "COMMIT", "IMAGE", "CAUSE"]);
    for release in &releases {
        let marker = if Some(release.version) == current { "*" } else { "" };
        let created = release.created_at.format(&Rfc3339).unwrap_or_default();
        table.row(&[
            &format!("v{}{marker}", release.version),
            status_name(release.status),
            created.get(..19).unwrap_or_default(),
            short_commit(&release.commit),
            &release.image,
            &release.cause.to_string(),
        ]);
    }
    let text = if releases.is_empty() { format!("{app} has no releases yet") } else { table.into_text() };
    Ok(Reply::new(text, serde_json::Value::Array(releases.iter().map(super::release_json).collect())))
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
    // What the rollback changes in the config, said by name (never value):
    // it brings back the target's config, and drops what was staged since.
    let changes = config_changes(&store.config(app.as_str()).await?, &current.config, &target.config, target.version);
    let plan = Deploy {
        app: app.clone(),
        who: caller.name().to_owned(),
        cause: ReleaseCause::Rollback { key: caller.name().to_owned(), to: target.version },
        source: Source::Release(Box::new(target.clone())),
        config: ConfigChange::Replace(target.config.clone()),
        limits: crate::deploy::LimitsChange::Keep,
    };
    let release = Box::pin(super::deploy(ctx, plan, io)).await?;
    // The summary stays the last line, ending with the URL, for scripts.
    let mut text = String::new();
    for change in &changes {
        let _ = writeln!(text, "config: {change}");
    }
    let _ = write!(
        text,
        "{app} v{}: rollback to v{}, live at {}",
        release.version,
        target.version,
        release.url.as_deref().unwrap_or("-")
    );
    let mut json = super::release_json(&release);
    if let Some(fields) = json.as_object_mut() {
        fields.insert("config_changes".to_owned(), serde_json::json!(changes));
    }
    Ok(Reply::new(text, json))
}

/// What going back to `target` (release v`version`'s config) does to the
/// app's config as it is now (`now`, which holds what was staged with
/// `--no-restart` since the current release, whose config is `released`):
/// a line per key, by name only.
fn config_changes(
    now: &BTreeMap<String, String>,
    released: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    version: u32,
) -> Vec<String> {
    let staged = |key: &String| released.get(key) != now.get(key);
    let mut keys: Vec<&String> = now.keys().chain(target.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (now.get(key), target.get(key)) {
            (Some(_), None) if staged(key) => Some(format!("drops {key}, staged with --no-restart and never released")),
            (Some(_), None) => Some(format!("drops {key}, which v{version} did not have")),
            (None, Some(_)) => Some(format!("brings back {key} from v{version}")),
            (Some(value), Some(then)) if value != then && staged(key) => {
                Some(format!("drops the value of {key} staged with --no-restart; {key} is as in v{version}"))
            }
            (Some(value), Some(then)) if value != then => Some(format!("sets {key} back to its value in v{version}")),
            _ => None,
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_rollback_names_what_it_drops_and_brings_back_but_no_value() {
        let released = config(&[("KEEP", "1"), ("CHANGED", "new"), ("ADDED", "x"), ("STAGED_CHANGE", "a")]);
        let now = config(&[
            ("KEEP", "1"),
            ("CHANGED", "new"),
            ("ADDED", "x"),
            ("STAGED_CHANGE", "b"),
            ("STAGED", "secret-value"),
        ]);
        let target = config(&[("KEEP", "1"), ("CHANGED", "old"), ("GONE", "y"), ("STAGED_CHANGE", "a")]);
        let changes = config_changes(&now, &released, &target, 3);
        assert_eq!(
            changes,
            [
                "drops ADDED, which v3 did not have",
                "sets CHANGED back to its value in v3",
                "brings back GONE from v3",
                "drops STAGED, staged with --no-restart and never released",
                "drops the value of STAGED_CHANGE staged with --no-restart; STAGED_CHANGE is as in v3",
            ]
        );
        assert!(!changes.concat().contains("secret-value"));
    }
}
