//! `ps`, `ps scale`, `logs` and `restart`: the app's running instances.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use nap_runner::Scale;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt;

use super::table::Table;
use super::{CommandError, Reply, existing_app, with_flow_reporter};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PsArgs {
    /// The app whose instances to show
    #[arg(required = true)]
    app: Option<String>,
    #[command(subcommand)]
    command: Option<PsCommand>,
}

#[derive(Debug, Subcommand)]
enum PsCommand {
    /// Set how many instances of each process type run, e.g. web=2 worker=1
    ///
    /// No new release is made: instances start or stop beside the serving
    /// ones, and the counts hold for later releases. By default one web
    /// instance runs, and none of the other types.
    Scale {
        app: String,
        #[arg(required = true, value_name = "TYPE=COUNT")]
        counts: Vec<String>,
    },
}

pub async fn run(ctx: &Context, caller: &Caller, args: PsArgs, io: &mut Io) -> Result<Reply, CommandError> {
    match args.command {
        None => ps(ctx, caller, args.app.as_deref().unwrap_or_default()).await,
        Some(PsCommand::Scale { app, counts }) => scale(ctx, caller, &app, &counts, io).await,
    }
}

async fn ps(ctx: &Context, caller: &Caller, name: &str) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let runner = ctx.runner().await?;
    let mut instances = runner.instances(Some(app.as_str())).await?.remove(app.as_str()).unwrap_or_default();
    instances.sort_by_key(nap_runner::Instance::id);
    // Crashes nap counted (liveness), or Docker's restarts, whichever saw more.
    let counted = ctx.store.crashes(app.as_str()).await?;
    for instance in &mut instances {
        instance.crashes = instance.crashes.max(counted.get(&instance.name).copied().unwrap_or(0));
    }
    let now = OffsetDateTime::now_utc();
    // Behind the router every web instance serves the app's one address.
    let app_url = ctx.settings.app_url(app.as_str()).filter(|_| runner.behind_router());
    let mut table =
        Table::new(&["INSTANCE", "RELEASE", "STATE", "RESTARTS", "UPTIME", "URL", runner.instance_column()]);
    let mut rows = Vec::new();
    for instance in &instances {
        let uptime = instance
            .started_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(|started| (now - started).whole_seconds().max(0));
        let web = instance.process.is_web();
        let direct = instance.address.as_ref().filter(|_| web).map(|address| format!("http://{address}/"));
        let url = app_url.clone().filter(|_| web && instance.address.is_some()).or(direct);
        let unit = runner.instance_unit(app.as_str(), instance);
        let name = runner.instance_label(instance);
        table.row(&[
            &name,
            &format!("v{}", instance.release),
            &instance.state,
            &instance.crashes.to_string(),
            &uptime.map_or_else(|| "-".into(), |s| format!("up {}", human_duration(s))),
            url.as_deref().unwrap_or("-"),
            unit.as_deref().unwrap_or(&instance.name),
        ]);
        rows.push(json!({
            "instance": name,
            "type": instance.process,
            "index": instance.index,
            "release": instance.release,
            "container": instance.name,
            "unit": unit,
            "state": instance.state,
            "restarts": instance.crashes,
            "uptime_seconds": uptime,
            "address": instance.address,
            "url": url,
        }));
    }
    let text = if instances.is_empty() { format!("{app} has no running instances") } else { table.into_text() };
    Ok(Reply::new(text, json!(rows)))
}

/// `ps scale APP web=2 worker=1`.
async fn scale(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    counts: &[String],
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, name).await?;
    let mut changes: Vec<Scale> = Vec::new();
    for count in counts {
        let change: Scale = count.parse().map_err(CommandError::Scale)?;
        if changes.iter().any(|c| c.kind == change.kind) {
            return Err(CommandError::ScaleTwice(change.kind));
        }
        changes.push(change);
    }
    let who = caller.name();
    let counts =
        with_flow_reporter(io, |report| async move { deploy::scale(ctx, &app, &changes, who, &report).await }).await?;
    let said: Vec<String> = counts.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
    let json: serde_json::Map<String, serde_json::Value> =
        counts.iter().map(|(kind, count)| (kind.to_string(), json!(count))).collect();
    Ok(Reply::new(format!("scaled {name}: {}", said.join(" ")), json!({ "name": name, "formation": json })))
}

/// What `logs` asks for: whose, how many lines back, whether to follow, and
/// whether the router's access lines or the app's own output.
pub struct LogsAsked {
    pub app: String,
    pub tail: Option<u64>,
    pub follow: bool,
    pub router: bool,
}

/// `logs APP`: the app's own output ([`app_logs`]), or with `--router`
/// the router's access lines of it ([`router_logs`]).
pub async fn logs(ctx: &Context, caller: &Caller, asked: LogsAsked, io: &mut Io) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, &asked.app).await?;
    if asked.router { router_logs(ctx, &app, &asked, io).await } else { app_logs(ctx, &app, &asked, io).await }
}

/// Streams the output of the app's instances, each line prefixed with its
/// instance as Heroku does (`app[web.1]: ...`): the last `tail` lines of
/// each, merged in time order, then with `follow` whatever comes, as it
/// comes, until the client goes away; dropping the Docker log streams then
/// closes their requests.
async fn app_logs(ctx: &Context, app: &AppName, asked: &LogsAsked, io: &mut Io) -> Result<Reply, CommandError> {
    let LogsAsked { tail, follow, .. } = *asked;
    let Some(current) = ctx.store.current_release(app.as_str()).await? else {
        return Err(CommandError::NothingRunning(app.clone()));
    };
    let runner = ctx.runner().await?;
    if let Some(merged) = runner.app_output(app.as_str(), tail, follow) {
        write_all(merged, io).await?;
        return Ok(Reply::Streamed);
    }
    let serving = nap_runner::InstanceId::web(current.version, current.restarts);
    let mut instances = runner.instances(Some(app.as_str())).await?.remove(app.as_str()).unwrap_or_default();
    instances.retain(|instance| instance.id().same_start(&serving));
    instances.sort_by_key(nap_runner::Instance::id);
    // What each instance wrote so far, merged by Docker's timestamps.
    let mut backlog = Vec::new();
    let mut seen = Vec::with_capacity(instances.len());
    for instance in &instances {
        let mut stream = runner.instance_output(instance, tail, false, None);
        let mut lines = nap_runner::Lines::default();
        let mut last = None;
        while let Some(chunk) = stream.next().await {
            for line in lines.push(&chunk?) {
                let timed = Timed::read(&line);
                last = timed.at.or(last);
                backlog.push((timed.at, instance.id().name(), timed.text.to_owned()));
            }
        }
        seen.push(last);
    }
    backlog.sort_by_key(|(at, _, _)| *at);
    let mut text = String::new();
    for (_, who, line) in &backlog {
        let _ = writeln!(text, "app[{who}]: {line}");
    }
    if io.stdout.write_all(text.as_bytes()).await.is_err() || io.stdout.flush().await.is_err() || !follow {
        return Ok(Reply::Streamed);
    }
    // Then as it comes, from where each left off.
    let live = instances.iter().zip(seen).map(|(instance, last)| {
        let since = last.map(OffsetDateTime::unix_timestamp);
        let stream = runner.instance_output(instance, None, true, since);
        prefixed(stream, format!("app[{}]: ", instance.id().name()), last)
    });
    write_all(futures_util::stream::select_all(live).boxed(), io).await?;
    Ok(Reply::Streamed)
}

/// Writes `stream` to the client until it ends or the client goes.
async fn write_all(
    mut stream: BoxStream<'static, Result<bytes::Bytes, nap_runner::RunError>>,
    io: &mut Io,
) -> Result<(), CommandError> {
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = io.client_gone.cancelled() => return Ok(()),
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let chunk = chunk?;
        if io.stdout.write_all(&chunk).await.is_err() || io.stdout.flush().await.is_err() {
            return Ok(());
        }
    }
}

/// A line as Docker's `timestamps` gives it: `2026-11-30T13:00:00.1234Z text`.
struct Timed<'a> {
    at: Option<OffsetDateTime>,
    text: &'a str,
}

impl<'a> Timed<'a> {
    fn read(line: &'a str) -> Timed<'a> {
        match line.split_once(' ') {
            Some((at, text)) => match OffsetDateTime::parse(at, &Rfc3339) {
                Ok(at) => Timed { at: Some(at), text },
                Err(_) => Timed { at: None, text: line },
            },
            None => Timed { at: OffsetDateTime::parse(line, &Rfc3339).ok(), text: "" },
        }
    }
}

/// An instance's timestamped output as whole lines, each starting with
/// `prefix` instead of its timestamp; lines from before `after` (already
/// shown) are dropped.
fn prefixed(
    output: impl futures_util::Stream<Item = Result<bytes::Bytes, nap_runner::RunError>> + Send + 'static,
    prefix: String,
    after: Option<OffsetDateTime>,
) -> BoxStream<'static, Result<bytes::Bytes, nap_runner::RunError>> {
    let lines = nap_runner::Lines::default();
    let output = output.boxed();
    futures_util::stream::unfold((output, lines, false), move |(mut output, mut lines, done)| {
        let prefix = prefix.clone();
        async move {
            if done {
                return None;
            }
            let text = |lines: Vec<String>| {
                lines.iter().map(|line| Timed::read(line)).filter(|timed| timed.at > after || timed.at.is_none()).fold(
                    String::new(),
                    |mut text, timed| {
                        let _ = writeln!(text, "{prefix}{}", timed.text);
                        text
                    },
                )
            };
            match output.next().await {
                Some(Ok(chunk)) => {
                    let block = text(lines.push(&chunk));
                    Some((Ok(bytes::Bytes::from(block)), (output, lines, false)))
                }
                Some(Err(err)) => Some((Err(err), (output, lines, true))),
                None => {
                    let block = text(lines.rest().into_iter().collect());
                    Some((Ok(bytes::Bytes::from(block)), (output, nap_runner::Lines::default(), true)))
                }
            }
        }
    })
    .boxed()
}

/// Streams the router's access-log lines of the app: the last `tail` (all
/// kept, 1000 at most), then with `follow` each new one until the client
/// goes away.
async fn router_logs(ctx: &Context, app: &AppName, asked: &LogsAsked, io: &mut Io) -> Result<Reply, CommandError> {
    let LogsAsked { tail, follow, .. } = *asked;
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
        format!(
            "restarted {name} v{} ({container}), live at {}",
            release.version,
            release.url.as_deref().unwrap_or("-")
        ),
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
