//! Keeps the published instances true to what runs on this host. When
//! Docker reports that the container serving an app died, its instance keys
//! go at once, so every router stops sending to it and answers 503 at once
//! instead of waiting on a dead address; when Docker (or systemd) starts
//! it again, at the same address, they come back. Only the app's current
//! instance is touched: the release flow's own starts and retirements are
//! not.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nap_runner::{DockerRunner, Lifecycle};
use nap_state::StoreError;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::{Context, ContextError};
use crate::deploy::Endpoint;

/// How long to wait before following Docker again after it failed.
const RETRY: Duration = Duration::from_secs(5);

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

async fn follow_once(ctx: &Context) -> Result<(), LivenessError> {
    let docker = ctx.docker_runner().await?;
    let mut events = std::pin::pin!(docker.lifecycle());
    while let Some(event) = events.next().await {
        apply(ctx, &docker, event?).await?;
    }
    Ok(())
}

async fn apply(ctx: &Context, docker: &DockerRunner, event: Lifecycle) -> Result<(), LivenessError> {
    let Lifecycle { app, container, started } = event;
    let Some(current) = ctx.store.current_release(&app).await? else { return Ok(()) };
    if current.workload.as_deref() != Some(container.as_str()) {
        return Ok(());
    }
    if !started {
        ctx.store.write_many(&[], &Endpoint::fields(&app, &container), None).await?;
        info!(%app, %container, "liveness: the serving instance died; unpublished");
        return Ok(());
    }
    if let Some(address) = docker.running_address(&container).await? {
        let endpoint = Endpoint { id: container.clone(), ip: address.ip().to_string(), port: address.port() };
        ctx.store.write_many(&endpoint.keys(&app, current.version), &[], None).await?;
        info!(%app, %container, %address, "liveness: the serving instance runs again; published");
    }
    Ok(())
}
