//! `ps scale`: how many instances of each process type run, changed
//! without a new release, under the deploy lock. New instances start
//! beside the serving ones and are routed once ready; instances scaled
//! away leave the routes, are drained as a retired release is, and are
//! retired. The formation is kept for every later release.

use nap_runner::{Formation, InstanceId, ProcessType, Procfile, Running, Scale};

use super::processes::{Processes, env_of};
use super::{DeployError, Endpoint, app_lock, switch_routers};
use crate::app_name::AppName;
use crate::context::Context;
use crate::report::Reporter;

#[derive(Debug, thiserror::Error)]
pub enum ScaleRefused {
    #[error("{kind} is not a process type of {app}: its Procfile has {known}")]
    UnknownType { app: AppName, kind: ProcessType, known: String },
    #[error("release is {app}'s release phase, run once per release; it has no instances to scale")]
    ReleasePhase { app: AppName },
    #[error(
        "{app} has no release yet, so its Procfile is not known: only web can be scaled before the first push ({kind} was asked)"
    )]
    NoRelease { app: AppName, kind: ProcessType },
}

/// Scales `app` as `changes` say; answers each type's count now.
pub async fn scale(
    ctx: &Context,
    app: &AppName,
    changes: &[Scale],
    who: &str,
    report: &Reporter,
) -> Result<Vec<(ProcessType, u32)>, DeployError> {
    let said: Vec<String> = changes.iter().map(|c| format!("{}={}", c.kind, c.count)).collect();
    let lock = app_lock(ctx, app, &format!("ps scale {}", said.join(" ")), who, Some(report)).await?;
    let store = &ctx.store;
    let mut formation: Formation = store.formation(app.as_str()).await?;
    let current = store.current_release(app.as_str()).await?;
    let runner = ctx.runner().await?;
    let processes = match &current {
        Some(release) => Processes::of_app(ctx, app.as_str(), release, &runner).await?,
        None => Processes {
            procfile: Procfile::default(),
            app_json: nap_runner::AppJson::default(),
            defaults: runner.default_formation(),
            placement: Vec::new(),
            // Nothing runs yet: its network is made by the first release.
            network: nap_runner::AppNetwork::of_app(app.as_str(), None),
        },
    };
    for change in changes {
        let refused = if change.kind.as_str() == ProcessType::RELEASE {
            ScaleRefused::ReleasePhase { app: app.clone() }
        } else if current.is_none() && !change.kind.is_web() {
            ScaleRefused::NoRelease { app: app.clone(), kind: change.kind.clone() }
        } else if !processes.procfile.declares(&change.kind) {
            let known: Vec<String> = processes.procfile.types().iter().map(ToString::to_string).collect();
            ScaleRefused::UnknownType { app: app.clone(), kind: change.kind.clone(), known: known.join(", ") }
        } else {
            continue;
        };
        return Err(refused.into());
    }
    // A type `ps scale` never set keeps app.json's count (or the default).
    for change in changes {
        formation.set(change.kind.clone(), change.count);
    }
    let counts = processes.counts(&formation);
    let Some(release) = current else {
        store.save_formation(app.as_str(), &formation).await?;
        return Ok(counts);
    };
    let wanted = processes.instances(&release, &formation);
    let env = env_of(&release);
    let limits = store.limits(app.as_str()).await?;
    if runner.scales_in_place() {
        // The cluster scales: the release's workloads applied again with the
        // new replicas (the same pods stay), those of types gone deleted.
        let requests: Vec<_> =
            wanted.iter().map(|id| processes.request(app.as_str(), &release, &env, limits, id.clone())).collect();
        runner.start_all(&requests, &|line: &str| report.detail(line)).await.map_err(DeployError::Run)?;
        lock.ensure_held().await?;
        store.save_formation(app.as_str(), &formation).await?;
        return Ok(counts);
    }
    let running: Vec<nap_runner::Instance> = runner
        .instances(Some(app.as_str()))
        .await?
        .remove(app.as_str())
        .unwrap_or_default()
        .into_iter()
        .filter(|instance| instance.id().same_start(&InstanceId::web(release.version, release.restarts)))
        .collect();
    let to_start: Vec<InstanceId> =
        wanted.iter().filter(|id| !running.iter().any(|instance| instance.id() == **id)).cloned().collect();
    let to_stop: Vec<&nap_runner::Instance> = running.iter().filter(|i| !wanted.contains(&i.id())).collect();
    let requests: Vec<_> =
        to_start.into_iter().map(|id| processes.request(app.as_str(), &release, &env, limits, id)).collect();
    if !requests.is_empty() {
        let names: Vec<String> = requests.iter().map(|r| r.id.name()).collect();
        report.step(&format!("Starting {}", names.join(", ")));
    }
    let started = runner.start_all(&requests, &|line: &str| report.detail(line)).await.map_err(DeployError::Run)?;
    let routed: Vec<&Running> =
        started.iter().filter(|(id, _)| id.process.is_web()).map(|(_, running)| running).collect();
    let writes: nap_state::Pairs =
        routed.iter().flat_map(|running| Endpoint::of(running).keys(app.as_str(), release.version)).collect();
    let leaving: Vec<&&nap_runner::Instance> = to_stop.iter().filter(|i| i.process.is_web()).collect();
    let deletes: Vec<String> = leaving.iter().flat_map(|i| Endpoint::fields(app.as_str(), &i.name)).collect();
    let published = async {
        lock.ensure_held().await?;
        store.write_many(&writes, &deletes, None).await?;
        store.save_formation(app.as_str(), &formation).await?;
        Ok::<(), DeployError>(())
    };
    if let Err(err) = published.await {
        for (id, _) in &started {
            if let Err(discard) = runner.discard(app.as_str(), id).await {
                report.problem(&format!("could not take {} back: {discard}", id.name()));
            }
        }
        return Err(err);
    }
    let routed: Vec<String> = routed.iter().map(|running| format!("{}:{}", running.host, running.port)).collect();
    let drained: Vec<String> = leaving.iter().filter_map(|i| i.address.clone()).collect();
    switch_routers(ctx, &routed, &drained, report).await;
    if !to_stop.is_empty() {
        let retired = runner.retire_all_but(app.as_str(), &wanted).await.map_err(DeployError::Run)?;
        report.step(&format!("Retired {}", retired.join(", ")));
    }
    Ok(counts)
}
