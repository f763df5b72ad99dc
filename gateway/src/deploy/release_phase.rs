//! The release phase: the Procfile's `release:` command, run once per new
//! release, before any of its instances start, in a one-off container of
//! its image with its config (Heroku's), or on Kubernetes in a pod. Its output goes to the client as
//! it comes; a non-zero exit, or one that takes over `release_timeout`,
//! refuses the release, and what served keeps serving.

use std::collections::VecDeque;

use nap_runner::{Limits, OneOff, Runner};
use nap_state::Release;

use super::DeployError;
use super::processes::{Processes, env_of};
use crate::app_name::AppName;
use crate::context::Context;
use crate::report::Reporter;

/// How many of its last lines a failed release phase shows again.
const TAIL: usize = 15;

/// Runs the release phase of `release`, if its Procfile has one, on the
/// app's network.
pub async fn run(
    ctx: &Context,
    runner: &Runner,
    app: &AppName,
    release: &Release,
    processes: &Processes,
    limits: Limits,
    report: &Reporter,
) -> Result<(), DeployError> {
    let Some(command) = processes.procfile.release() else { return Ok(()) };
    let shown = shlex::try_join(command.iter().map(String::as_str)).unwrap_or_else(|_| command.join(" "));
    report.step(&format!("Release phase: {shown}"));
    let env = env_of(release);
    let job = OneOff {
        app: app.as_str(),
        release: release.version,
        image: &release.image,
        command: &command,
        env: &env,
        limits,
        what: "release".into(),
        tty: None,
        stdin: false,
        network: &processes.network,
    };
    let timeout = ctx.settings.release_timeout();
    let tail = std::sync::Mutex::new(VecDeque::with_capacity(TAIL));
    let ran = {
        let output = |line: &str| say(report, &tail, line.to_owned());
        runner.release_phase(&job, timeout, &output).await?
    };
    let log_tail = tail.into_inner().map(Vec::from).unwrap_or_default();
    match ran {
        None => Err(DeployError::ReleasePhaseTimeout { seconds: timeout.as_secs() }),
        Some(0) => Ok(()),
        Some(code) => Err(DeployError::ReleasePhase { code, log_tail }),
    }
}

/// The last lines of a release phase's output.
type Tail = std::sync::Mutex<VecDeque<String>>;

fn say(report: &Reporter, tail: &Tail, line: String) {
    report.detail(&line);
    let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if tail.len() == TAIL {
        tail.pop_front();
    }
    tail.push_back(line);
}
