//! The `nap` binary: the SSH gateway, the local admin commands, and the entry
//! points that OpenSSH (`ssh-command`) and git (`hook`) call.

mod app_name;
mod cli;
mod deploy;
mod exec;
mod keys;
mod remote;
mod repos;
mod server;
mod settings;

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command, HookCommand, KeysCommand};
use exec::{Context, Io};
use nap_state::Store;
use settings::Settings;

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
    match cli.command {
        Command::Version => {
            println!("nap {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let ctx = context(settings)?;
            server::serve(ctx, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(command) => {
            let ctx = context(settings)?;
            keys_command(&ctx, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SshCommand { key } => {
            let ctx = context(settings)?;
            let key = keys::get(&ctx.store, &key).await?;
            let command = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
            let io = Io {
                stdin: tokio::io::stdin(),
                stdout: tokio::io::stdout(),
                stderr: tokio::io::stderr(),
                client_gone: CancellationToken::new(),
            };
            let status = exec::run(&ctx, &key, &command, io).await;
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
        }
        Command::Hook(HookCommand::PreReceive) => {
            let status = deploy::pre_receive(&settings).await;
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)))
        }
    }
}

fn context(settings: Settings) -> Result<Arc<Context>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data directory {}", settings.data_dir.display()))?;
    let store = Store::open_embedded(&settings.store_path())?;
    let exe = std::env::current_exe().context("cannot locate the nap binary")?;
    Ok(Arc::new(Context { settings, store, exe }))
}

async fn keys_command(ctx: &Context, command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Add { name, admin } => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the key from standard input")?;
            let key = keys::parse_public_key(&text)?;
            let added = keys::add(&ctx.store, &name, &key, admin).await?;
            println!("added key {} ({}){}", added.name, added.fingerprint, if admin { " as admin" } else { "" });
        }
        KeysCommand::List { json } => {
            let all = keys::list(&ctx.store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no keys; add one with: nap keys add NAME < KEY.pub");
            } else {
                for key in all {
                    println!("{:<20} {}{}", key.name, key.fingerprint, if key.admin { "  admin" } else { "" });
                }
            }
        }
        KeysCommand::Remove { name } => {
            keys::remove(&ctx.store, &name).await?;
            println!("removed key {name}");
        }
        KeysCommand::AuthorizedKeys => {
            let prefix = forced_command_prefix(ctx)?;
            for key in keys::list(&ctx.store).await? {
                println!("{}", keys::authorized_keys_line(&prefix, &key));
            }
        }
    }
    Ok(())
}

/// `nap` as OpenSSH should run it: this binary, with the settings that find
/// this data directory.
fn forced_command_prefix(ctx: &Context) -> Result<String> {
    let mut words = vec![ctx.exe.display().to_string()];
    if let Some(config) = &ctx.settings.config {
        words.push(format!("--config {}", config.display()));
    }
    words.push(format!("--data-dir {}", ctx.settings.data_dir.display()));
    let prefix = words.join(" ");
    // The line is read by OpenSSH inside double quotes and then by a shell.
    if prefix.chars().any(|c| !(c.is_ascii_alphanumeric() || "/._-+:= ".contains(c))) {
        bail!("paths used in authorized_keys must be plain (letters, digits, / . _ - + : =): {prefix}");
    }
    Ok(prefix)
}

/// `serve` logs to stderr. Hooks must not: their stderr goes to the pusher,
/// so they log to `DATA/logs/hooks.log`.
fn init_tracing(command: &Command, settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NAP_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match command {
        Command::Serve(_) => builder.with_writer(std::io::stderr).init(),
        Command::Hook(_) | Command::SshCommand { .. } => {
            let dir = settings.data_dir.join("logs");
            let file = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nap.log")));
            if let Ok(file) = file {
                builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
            }
        }
        _ => {}
    }
}
