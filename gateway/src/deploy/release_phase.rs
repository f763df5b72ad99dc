//! The release phase: the Procfile's `release:` command, run once per new
//! release, before any of its instances start, in a one-off container of
//! its image with its config (Heroku's). Its output goes to the client as
//! it comes; a non-zero exit, or one that takes over `release_timeout`,
//! refuses the release, and what served keeps serving.

use std::collections::VecDeque;

use futures_util::StreamExt;
use nap_runner::docker::one_off::OneOff;
use nap_runner::{Limits, Runner};
use nap_state::Release;

use super::DeployError;
use super::processes::env_of;
use crate::app_name::AppName;
use crate::context::Context;
use crate::report::Reporter;

/// How many of its last lines a failed release phase shows again.
const TAIL: usize = 15;

/// Runs `command`, the release phase of `release`.
pub async fn run(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    release: &Release,
    command: &[String],
    limits: Limits,
    report: &Reporter,
) -> Result<(), DeployError> {
    let shown = shlex::try_join(command.iter().map(String::as_str)).unwrap_or_else(|_| command.join(" "));
    report.step(&format!("Release phase: {shown}"));
    let Some(docker) = runner.one_offs() else { return Err(DeployError::ReleasePhaseHere) };
    let env = env_of(release);
    let job = OneOff {
        app: app.as_str(),
        release: release.version,
        image: &release.image,
        command,
        env: &env,
        limits,
        what: "release".into(),
        tty: None,
        stdin: false,
    };
    let attached = docker.start_one_off(&job).await?;
    let timeout = ctx.settings.release_timeout();
    let mut tail = VecDeque::with_capacity(TAIL);
    let ran = tokio::time::timeout(timeout, async {
        let mut output = attached.output;
        let mut lines = crate::report::Lines::default();
        while let Some(chunk) = output.next().await {
            for line in lines.push(&chunk?.into_bytes()) {
                say(report, &mut tail, line);
            }
        }
        if let Some(line) = lines.rest() {
            say(report, &mut tail, line);
        }
        docker.exit_code(&attached.name).await
    })
    .await;
    docker.discard_one_off(&attached.name).await;
    match ran {
        Err(_) => Err(DeployError::ReleasePhaseTimeout { seconds: timeout.as_secs() }),
        Ok(Err(err)) => Err(err.into()),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => Err(DeployError::ReleasePhase { code, log_tail: tail.into() }),
    }
}

fn say(report: &Reporter, tail: &mut VecDeque<String>, line: String) {
    report.detail(&line);
    if tail.len() == TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}
