//! `nap hook pre-receive`: deploy what was pushed to master or main.
//!
//! git runs this before it updates any ref. Exiting non-zero declines the
//! whole push, so a failed build or start check leaves the branch where it
//! was, and the previous release keeps serving. The process that runs git
//! hands this one what it needs as a [`HookInput`]; [`git`] is the script
//! nap installs in each repo and the ref updates git hands it.

pub mod git;

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{Instrument, error, info_span};

use crate::app_name::AppName;
use crate::context::Context;
use crate::deploy::{self, Deploy, DeployError, Source};
use crate::lifeline::Lifeline;
use crate::report::Reporter;
use crate::settings::Settings;
use git::RefUpdate;

/// The variable that names the [`HookInput`] file.
pub const INPUT_VAR: &str = "NAP_HOOK";

/// What the process that runs git hands its pre-receive hook: its settings
/// whole, the app and the pushing key. It travels as a file (mode 0600,
/// removed when git is done) named by `NAP_HOOK`, so no setting, secret or
/// not, is read twice or lands in an environment.
#[derive(Debug, Serialize, Deserialize)]
pub struct HookInput {
    pub settings: Settings,
    pub app: AppName,
    pub key: String,
    /// The process that runs git for the pusher.
    pub gateway: Option<Lifeline>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{INPUT_VAR} is not set; pushes must go through nap")]
    NotFromNap,
    #[error("reading the hook input {path}: {source}")]
    ReadInput {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hook input {path} is not nap's: {source}")]
    DecodeInput {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the hook input: {0}")]
    WriteInput(#[source] std::io::Error),
    #[error("reading the ref updates from git: {0}")]
    ReadUpdates(#[source] std::io::Error),
    #[error(transparent)]
    Updates(#[from] git::MalformedUpdate),
    #[error("no repo directory: {0}")]
    RepoDir(#[source] std::io::Error),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

impl HookInput {
    /// Writes the input into `dir` for one run of git; the file is removed
    /// when the answer is dropped.
    pub fn write(&self, dir: &Path) -> Result<tempfile::TempPath, HookError> {
        std::fs::create_dir_all(dir).map_err(HookError::WriteInput)?;
        let mut file =
            tempfile::Builder::new().prefix("hook-").suffix(".json").tempfile_in(dir).map_err(HookError::WriteInput)?;
        let json = serde_json::to_vec(self).map_err(|e| HookError::WriteInput(e.into()))?;
        file.write_all(&json).map_err(HookError::WriteInput)?;
        Ok(file.into_temp_path())
    }

    /// Reads the input the running git was handed.
    pub fn read() -> Result<HookInput, HookError> {
        let path = std::env::var(INPUT_VAR).map_err(|_| HookError::NotFromNap)?;
        let text = std::fs::read(&path).map_err(|source| HookError::ReadInput { path: path.clone(), source })?;
        serde_json::from_slice(&text).map_err(|source| HookError::DecodeInput { path, source })
    }
}

/// Entry point; answers the hook's exit status.
pub async fn pre_receive(ctx: &Context, app: AppName, pusher: String, gateway: Option<Lifeline>) -> i32 {
    let (report, writer) = Reporter::spawn(tokio::io::stderr());
    let result = run(ctx, app, pusher, gateway, &report).await;
    if let Err(err) = &result {
        error!(error = %err, "deploy failed");
        report.problem(&err.to_string());
        if let HookError::Deploy(err) = err {
            err.report(&report);
        }
    }
    drop(report);
    let _ = writer.await;
    i32::from(result.is_err())
}

async fn run(
    ctx: &Context,
    app: AppName,
    pusher: String,
    gateway: Option<Lifeline>,
    report: &Reporter,
) -> Result<(), HookError> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(HookError::ReadUpdates)?;
    let updates = git::parse_ref_updates(&input)?;

    for update in updates.iter().filter(|u| !u.deploys()) {
        match update.branch() {
            Some(branch) if update.is_delete() => report.step(&format!("Branch {branch} deleted; nothing deployed")),
            Some(branch) => report.step(&format!("Branch {branch} stored, not deployed: only master and main deploy")),
            None => report.step(&format!("{} stored, not deployed", update.refname)),
        }
    }
    // If master and main both arrive in one push, the last one listed wins.
    let Some(RefUpdate { new: commit, .. }) = updates.into_iter().rev().find(RefUpdate::deploys) else {
        return Ok(());
    };
    let span = info_span!("deploy", %app, commit = %nap_builder::short_commit(&commit), key = %pusher);
    let repo = std::env::current_dir().map_err(HookError::RepoDir)?;
    let plan = Deploy {
        app,
        cause: nap_state::ReleaseCause::Push { key: pusher.clone() },
        who: pusher,
        source: Source::Push { commit, repo, gateway },
        config: deploy::ConfigChange::Keep,
        limits: deploy::LimitsChange::Keep,
    };
    Box::pin(deploy::deploy(ctx, plan, report).instrument(span)).await?;
    Ok(())
}
