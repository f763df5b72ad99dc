//! Keeps the published instances true to what runs on this host. When
//! Docker reports that a published (routed) instance died, its keys go at
//! once, so every router stops sending to it instead of waiting on a dead
//! address; when Docker (or systemd) starts it again, at the same address,
//! they come back, if it still belongs to the release that serves. The
//! release flow's own starts and retirements are not touched: what it
//! retires is unpublished first, and what it starts it publishes itself.
//!
//! An instance that the app's formation still wants, and that stopped
//! without nap asking, counts a crash (`ps` shows them). Docker's restart
//! policy starts a crashed one again; one that was killed (`docker kill`,
//! which Docker takes for a wish to stop it) is started again here, after
//! a pause that doubles with each crash in a row (1 s, up to a minute).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_util::StreamExt;
use nap_runner::{DockerRunner, Lifecycle};
use nap_state::StoreError;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::{Context, ContextError};
use crate::deploy::Endpoint;
use crate::deploy::processes::Processes;

/// How long to wait before following Docker again after it failed.
const RETRY: Duration = Duration::from_secs(5);
/// The longest pause before a crashed instance is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before it crashed starts its backoff over.
const STEADY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
enum LivenessError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Run(#[from] nap_runner::RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Follows Docker's container events until `stop`.
pub async fn follow(ctx: Arc<Context>, stop: CancellationToken) {
    let failed = "liveness: cannot follow Docker's events; trying again";
    crate::following::until_stopped(&stop, RETRY, failed, || follow_once(&ctx)).await;
}

async fn follow_once(ctx: &Arc<Context>) -> Result<(), LivenessError> {
    let docker = ctx.docker_runner().await?;
    let mut events = std::pin::pin!(docker.lifecycle());
    let mut seen = Seen::default();
    while let Some(event) = events.next().await {
        apply(ctx, &docker, event?, &mut seen).await?;
    }
    Ok(())
}

/// What liveness remembers of the instances it saw die.
#[derive(Default)]
struct Seen {
    /// The (app, container) of each instance unpublished when it died.
    dead: HashSet<(String, String)>,
    /// Crashes in a row of each container, and when it last started.
    crashes: HashMap<String, (u32, Instant)>,
}

async fn apply(
    ctx: &Arc<Context>,
    docker: &DockerRunner,
    event: Lifecycle,
    seen: &mut Seen,
) -> Result<(), LivenessError> {
    let Lifecycle { app, container, instance, started } = event;
    let fields = Endpoint::fields(&app, &container);
    if !started {
        if ctx.store.get(&fields[0]).await?.is_some() {
            ctx.store.write_many(&[], &fields, None).await?;
            info!(%app, %container, "liveness: a routed instance died; unpublished");
            seen.dead.insert((app.clone(), container.clone()));
        }
        if let Some(id) = instance
            && wanted(ctx, &app, &id).await?
        {
            crashed(ctx, docker, &app, &container, seen).await?;
        }
        return Ok(());
    }
    let now = Instant::now();
    let in_a_row = seen.crashes.get(&container).map_or(0, |(n, _)| *n);
    seen.crashes.insert(container.clone(), (in_a_row, now));
    if !seen.dead.remove(&(app.clone(), container.clone())) {
        return Ok(());
    }
    let Some(current) = ctx.store.current_release(&app).await? else { return Ok(()) };
    let serving = nap_runner::InstanceId::web(current.version, current.restarts);
    if let Some((id, address)) = docker.running_address(&container).await?
        && id.same_start(&serving)
    {
        let endpoint = Endpoint { id: container.clone(), ip: address.ip().to_string(), port: address.port() };
        ctx.store.write_many(&endpoint.keys(&app, current.version), &[], None).await?;
        info!(%app, %container, %address, "liveness: the instance runs again; published");
    }
    Ok(())
}

/// Whether instance `id` of `app` is one the app runs now: of the start of
/// the release that serves, and within its type's count.
async fn wanted(ctx: &Context, app: &str, id: &nap_runner::InstanceId) -> Result<bool, LivenessError> {
    let Some(current) = ctx.store.current_release(app).await? else { return Ok(false) };
    if !id.same_start(&nap_runner::InstanceId::web(current.version, current.restarts)) {
        return Ok(false);
    }
    let Ok(processes) = Processes::of(&current, nap_runner::AppNetwork::of_app(app, None)) else { return Ok(false) };
    let formation: nap_runner::Formation = ctx.store.formation(app).await?;
    Ok(processes.counts(&formation).iter().any(|(kind, count)| *kind == id.process && id.index <= *count))
}

/// After its backoff, counts a crash of `container` if it still exists (a
/// retired or destroyed one is gone by then), and on the docker runner
/// starts it again if Docker did not.
async fn crashed(
    ctx: &Arc<Context>,
    docker: &DockerRunner,
    app: &str,
    container: &str,
    seen: &mut Seen,
) -> Result<(), LivenessError> {
    let (in_a_row, started) = seen.crashes.get(container).copied().unwrap_or((0, Instant::now()));
    let in_a_row = if started.elapsed() > STEADY { 1 } else { in_a_row + 1 };
    seen.crashes.insert(container.to_owned(), (in_a_row, started));
    let restarts = ctx.runner().await.is_ok_and(|runner| runner.restarts_killed_instances());
    let pause = Duration::from_secs(1 << in_a_row.saturating_sub(1).min(6)).min(MAX_BACKOFF);
    let (ctx, docker, app, container) = (Arc::clone(ctx), docker.clone(), app.to_owned(), container.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        let counted = async {
            if !docker.exists(&container).await? || ctx.store.app(&app).await?.is_none() {
                return Ok::<_, LivenessError>(());
            }
            let count = ctx.store.count_crash(&app, &container).await?;
            info!(%app, %container, crashes = count, "liveness: an instance stopped without nap asking");
            // Docker's own policy may have started it already; then this
            // does nothing. Systemd starts its units' containers itself.
            if restarts && docker.start_again(&container).await? {
                info!(%app, %container, ?pause, "liveness: started a crashed instance again");
            }
            Ok(())
        };
        if let Err(err) = counted.await {
            tracing::warn!(%app, %container, error = %err, "liveness: could not handle a crashed instance");
        }
    });
    Ok(())
}
