//! `ps`, `logs` and `restart`: the app's running instances.

use std::fmt::Write as _;

use futures_util::StreamExt;
use nap_runner::RunnerKind;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt;

use super::{CommandError, Reply, existing_app, with_flow_reporter};
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy;

pub async fn ps(ctx: &Context, caller: &Caller, name: &str) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let runner = ctx.runner().await?;
    let mut instances = runner.instances(Some(app.as_str())).await?.remove(app.as_str()).unwrap_or_default();
    instances.sort_by_key(|i| i.release);
    let now = OffsetDateTime::now_utc();
    let systemd = runner.kind() == RunnerKind::Systemd;
    let what = match runner.kind() {
        RunnerKind::Systemd => "UNIT",
        RunnerKind::Kubernetes => "POD",
        RunnerKind::Docker => "CONTAINER",
    };
    // Behind the router every instance serves the app's one address.
    let app_url = ctx.settings.app_url(app.as_str()).filter(|_| runner.kind() != RunnerKind::Kubernetes);
    let mut text = format!("{:<8} {:<40} {:<12} {:<10} {}\n", "RELEASE", what, "STATE", "UPTIME", "URL");
    let mut rows = Vec::new();
    for instance in &instances {
        let uptime = instance
            .started_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(|started| (now - started).whole_seconds().max(0));
        let direct = instance.address.as_ref().map(|address| format!("http://{address}/"));
        let url = app_url.clone().filter(|_| instance.address.is_some()).or(direct);
        let unit = systemd.then(|| instance.id().unit(app.as_str()));
        let _ = writeln!(
            text,
            "{:<8} {:<40} {:<12} {:<10} {}",
            format!("v{}", instance.release),
            unit.as_deref().unwrap_or(&instance.name),
            instance.state,
            uptime.map_or_else(|| "-".into(), human_duration),
            url.as_deref().unwrap_or("-")
        );
        rows.push(json!({
            "release": instance.release,
            "container": instance.name,
            "unit": unit,
            "state": instance.state,
            "uptime_seconds": uptime,
            "address": instance.address,
            "url": url,
        }));
    }
    if instances.is_empty() {
        text = format!("{app} has no running instances");
    }
    Ok(Reply::new(text, json!(rows)))
}

/// Streams the current release's output. With `follow` it runs until the
/// client goes away; dropping the Docker log stream then closes its request.
pub async fn logs(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    tail: Option<u64>,
    follow: bool,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let Some(container) = ctx.store.current_release(app.as_str()).await?.and_then(|r| r.workload) else {
        return Err(CommandError::NothingRunning(app));
    };
    let runner = ctx.runner().await?;
    let mut stream = runner.logs(app.as_str(), &container, tail, follow);
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = io.client_gone.cancelled() => break,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk?;
        if io.stdout.write_all(&chunk).await.is_err() || io.stdout.flush().await.is_err() {
            break;
        }
    }
    Ok(Reply::Streamed)
}

/// Streams the router's access-log lines of the app: the last `tail` (all
/// kept, 1000 at most), then with `follow` each new one until the client
/// goes away.
pub async fn router_logs(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    tail: Option<u64>,
    follow: bool,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let log = &ctx.access_log;
    if !log.routing() {
        return Err(CommandError::NoRouterHere);
    }
    // Following from before the tail is read: a line may show twice, none is lost.
    let mut live = log.follow();
    let tail = tail.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    for kept in log.tail(app.as_str(), tail) {
        if io.stdout.write_all(format!("{kept}\n").as_bytes()).await.is_err() {
            return Ok(Reply::Streamed);
        }
    }
    let _ = io.stdout.flush().await;
    if !follow {
        return Ok(Reply::Streamed);
    }
    loop {
        let next = tokio::select! {
            next = live.recv() => next,
            () = io.client_gone.cancelled() => break,
        };
        match next {
            Ok(new) if &*new.app == app.as_str() => {
                if io.stdout.write_all(format!("{}\n", new.entry).as_bytes()).await.is_err()
                    || io.stdout.flush().await.is_err()
                {
                    break;
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    Ok(Reply::Streamed)
}

pub async fn restart(ctx: &Context, caller: &Caller, name: &str, io: &mut Io) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let release =
        with_flow_reporter(io, |report| async move { deploy::restart(ctx, &app, caller.name(), &report).await })
            .await?;
    let container = release.workload.clone().unwrap_or_default();
    Ok(Reply::new(
        format!("restarted {name} v{} ({container})", release.version),
        json!({ "name": name, "release": release.version, "container": container, "url": release.url }),
    ))
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}
