//! The `nap` binary: the SSH gateway, the local admin commands, and the entry
//! points that OpenSSH (`ssh-command`) and git (`hook`) call.

mod app_name;
mod caller;
mod cli;
mod commands;
mod context;
mod deploy;
mod hook;
mod keys;
mod remote;
mod report;
mod repos;
mod server;
mod settings;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use caller::Caller;
use cli::{Cli, Command, HookCommand};
use context::{Context, Io};
use settings::Settings;

/// How long an exiting nap waits for its dropped locks' leases to be
/// revoked: one etcd call's bound.
const LOCK_RELEASE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Shared locks dropped just now are still being let go in etcd.
    runtime.block_on(nap_state::Lock::released(LOCK_RELEASE));
    // A read of stdin may still sit on a blocking thread; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::resolve(&cli.global)?;
    init_tracing(&cli.command, &settings);
    if let Command::Watch(args) = &cli.command {
        return watch(&settings, args).await;
    }
    let ctx = context(settings).await?;
    let status = match cli.command {
        Command::Serve(args) => {
            server::serve(ctx, &args).await?;
            0
        }
        Command::SshCommand { key } => {
            let key = keys::get(&ctx.store, &key).await?;
            let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
            until_signalled(remote::route(&ctx, &Caller::Key(key), &command, stdio())).await
        }
        Command::Hook(HookCommand::PreReceive) => hook::pre_receive(&ctx).await as u32,
        Command::Operate(command) => {
            until_signalled(commands::execute(&ctx, &Caller::Host, command, cli.output, stdio())).await
        }
        Command::Watch(_) => 0,
    };
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
}

/// `nap watch`: template hooks until SIGTERM or Ctrl-C (or once).
async fn watch(settings: &Settings, args: &nap_hooks::watcher::WatchArgs) -> Result<ExitCode> {
    use nap_hooks::source::Source;
    let source = if args.env {
        Source::Env
    } else {
        if settings.etcd.is_none() {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
        }
        Source::Store(Arc::new(settings.open_store().await?))
    };
    let status = nap_hooks::command::watch(args, source).await?;
    Ok(ExitCode::from(status))
}

/// Runs a command until it ends or a signal stops it. Stopping drops the
/// command, so what it holds is let go on the way out: deploy locks, and
/// containers frozen for a snapshot, which would otherwise stay frozen.
async fn until_signalled(command: impl std::future::Future<Output = u32>) -> u32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        return command.await;
    };
    let (name, status) = tokio::select! {
        status = command => return status,
        _ = interrupt.recv() => ("SIGINT", 130),
        _ = terminate.recv() => ("SIGTERM", 143),
        _ = hangup.recv() => ("SIGHUP", 129),
    };
    eprintln!("error: stopped by {name}");
    status
}

fn stdio() -> Io {
    Io {
        stdin: Box::new(tokio::io::stdin()),
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        client_gone: CancellationToken::new(),
    }
}

async fn context(settings: Settings) -> Result<Arc<Context>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    let store = settings.open_store().await?;
    let exe = std::env::current_exe().context("cannot locate the nap binary")?;
    Ok(Arc::new(Context { settings, store, exe, known_keys: Default::default() }))
}

/// `serve` logs to stderr. Hooks and forced commands must not: their stderr
/// goes to the client, so they log to `DATA/logs/nap.log`. Local commands
/// log nothing unless NAP_LOG asks.
fn init_tracing(command: &Command, settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NAP_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match command {
        Command::Serve(_) | Command::Watch(_) => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_writer(std::io::stderr).init()
        }
        Command::Hook(_) | Command::SshCommand { .. } => {
            let dir = settings.data_dir.join("logs");
            let file = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nap.log")));
            if let Ok(file) = file {
                builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
            }
        }
        Command::Operate(_) => {
            if std::env::var_os("NAP_LOG").is_some() {
                builder.with_writer(std::io::stderr).init();
            }
        }
    }
}
