//! On the swarm runner the swarm starts, moves and stops an app's tasks
//! itself: a start-first rolling update, a task rescheduled off a lost
//! node, a scale. This keeps the published instances
//! (`/nap/apps/APP/instances/`, which every router follows) true to the
//! manager's task list: each web task that runs, and that the swarm wants
//! running, is published at its node's address and published port; a task
//! that stops, or is no longer wanted, goes. The list is read every
//! [`FOLLOW`], so routers follow the swarm within a second; a task on a
//! node that went down leaves each router's rotation sooner, by the
//! router's own checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nap_runner::RoutedTask;
use nap_state::{StoreError, layout};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::{Context, ContextError};
use crate::deploy::Endpoint;

/// How often the task list is read.
const FOLLOW: Duration = Duration::from_millis(250);
/// How often what is published is read again from the store (the release
/// flow and `apps destroy` write there too).
const REREAD: Duration = Duration::from_secs(5);
/// The pause before following again after the manager failed.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Swarm(#[from] nap_runner::SwarmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An app's published web instances: name → address. A name is its task's,
/// so it keeps its release: the address alone says whether it changed.
type Published = BTreeMap<String, String>;

/// Follows the swarm's tasks until `stop`.
pub async fn follow(ctx: Arc<Context>, stop: CancellationToken) {
    let failed = "swarm: cannot follow the task list; trying again";
    crate::following::until_stopped(&stop, RETRY, failed, || follow_once(&ctx)).await;
}

async fn follow_once(ctx: &Context) -> Result<(), FollowError> {
    let runner = ctx.runner().await?;
    let Some(swarm) = runner.swarm() else { return Ok(()) };
    let mut published: BTreeMap<String, Published> = BTreeMap::new();
    let mut read_at: Option<Instant> = None;
    loop {
        let routed = swarm.routed().await?;
        if read_at.is_none_or(|at| at.elapsed() >= REREAD) {
            published = read_published(ctx, &routed).await?;
            read_at = Some(Instant::now());
        }
        let mut wanted: BTreeMap<String, Published> = BTreeMap::new();
        let mut releases: BTreeMap<String, u32> = BTreeMap::new();
        for task in routed {
            releases.insert(task.name.clone(), task.release);
            wanted.entry(task.app).or_default().insert(task.name, task.address.to_string());
        }
        let apps: BTreeSet<String> = published.keys().chain(wanted.keys()).cloned().collect();
        for app in apps {
            let want = wanted.remove(&app).unwrap_or_default();
            let have = published.get(&app).cloned().unwrap_or_default();
            if want != have {
                publish(ctx, &app, &have, &want, &releases).await?;
            }
            if want.is_empty() {
                published.remove(&app);
            } else {
                published.insert(app, want);
            }
        }
        tokio::time::sleep(FOLLOW).await;
    }
}

/// What the store publishes now, for every app and every app with tasks.
async fn read_published(ctx: &Context, routed: &[RoutedTask]) -> Result<BTreeMap<String, Published>, FollowError> {
    let mut apps: BTreeSet<String> = ctx.store.apps().await?.into_iter().map(|app| app.record.name).collect();
    apps.extend(routed.iter().map(|task| task.app.clone()));
    let mut published = BTreeMap::new();
    for app in apps {
        let pairs = ctx.store.list(&layout::instances(&app)).await?;
        let addresses =
            nap_state::instance_addresses(pairs.iter().map(|(key, value)| (key.as_str(), value.as_slice())));
        let instances: Published =
            addresses.into_iter().filter_map(|((_, id), address)| Some((id.to_owned(), address?))).collect();
        if !instances.is_empty() {
            published.insert(app, instances);
        }
    }
    Ok(published)
}

/// Writes `want` over `have` for `app`, in one transaction; `releases`
/// says each wanted task's release.
async fn publish(
    ctx: &Context,
    app: &str,
    have: &Published,
    want: &Published,
    releases: &BTreeMap<String, u32>,
) -> Result<(), FollowError> {
    let mut writes = Vec::new();
    for (name, address) in want {
        if have.get(name) == Some(address) {
            continue;
        }
        let Ok(address) = address.parse::<std::net::SocketAddr>() else { continue };
        let endpoint = Endpoint { id: name.clone(), ip: address.ip().to_string(), port: address.port() };
        writes.extend(endpoint.keys(app, releases.get(name).copied().unwrap_or_default()));
    }
    let gone: Vec<&String> = have.keys().filter(|name| !want.contains_key(*name)).collect();
    let deletes: Vec<String> = gone.iter().flat_map(|name| Endpoint::fields(app, name)).collect();
    ctx.store.write_many(&writes, &deletes, None).await?;
    let added: Vec<&String> = want.keys().filter(|name| !have.contains_key(*name)).collect();
    info!(app, added = ?added, removed = ?gone, "swarm: the app's routed tasks changed");
    Ok(())
}
