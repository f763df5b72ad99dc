//! The local command line: `nap serve`, `nap keys ...`, and the entry points
//! that OpenSSH and git call (`ssh-command`, `hook`). [`main`] runs one.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::caller::Caller;
use crate::commands::{self, OutputArgs};
use crate::context::{Context, ContextError, Io};
use crate::hook::{HookError, HookInput};
use crate::log_format::LineFormat;
use crate::log_writer::{LogGuard, log_writer};
use crate::settings::{Settings, SettingsError};

/// How long an exiting nap waits for its dropped locks' leases to be
/// revoked: one etcd call's bound.
const LOCK_RELEASE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(name = "nap", version, about = "git push to deploy, ssh to operate", propagate_version = true)]
pub struct Cli {
    // Before the settings, so that their help heading does not take it.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Settings every subcommand shares; each also comes from the
    /// environment and from nap.toml.
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses an invocation (`args`, the program's name first). In
    /// forced-command mode (`ssh-command`, which OpenSSH runs for a client),
    /// no `NAP_*` variable counts: the client may have set them (`SetEnv`,
    /// where sshd's `AcceptEnv` lets it), so the settings are the flags of
    /// the `authorized_keys` line and the settings file alone.
    pub fn parse_invocation(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
        let mut command = <Cli as clap::CommandFactory>::command();
        if args.iter().any(|arg| arg == "ssh-command") {
            command = command.mut_args(|arg| arg.env(None));
        }
        let matches = command.try_get_matches_from(args)?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SSH gateway that takes pushes and commands, and the HTTP router (see --listen, --http-listen)
    Serve,
    /// Run the HTTP router alone, for hosts that only route (see --http-listen, --domain)
    Router,
    /// Entry point for OpenSSH's forced command: runs $SSH_ORIGINAL_COMMAND as key NAME
    SshCommand {
        /// The key's name, as added with `nap keys add`
        #[arg(long, value_name = "NAME")]
        key: String,
    },
    /// Watch keys in the store, render templates into files, check and reload (confd's job)
    Watch(nap_hooks::watcher::WatchArgs),
    /// Entry points for git hooks (installed by nap; not for people)
    #[command(subcommand, hide = true)]
    Hook(HookCommand),
    #[command(flatten)]
    Operate(commands::Operate),
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Deploy what is pushed to master or main (git runs this before updating refs)
    PreReceive,
}

/// What stops nap before a command can answer for itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Watch(#[from] nap_hooks::command::CommandError),
    #[error(transparent)]
    Router(#[from] crate::router::RouterError),
    #[error(transparent)]
    Command(#[from] crate::remote::ParseError),
    #[error("the router is off (http_listen = \"off\"); give it an address with --http-listen ADDR")]
    RouterOff,
}

/// Runs the command line; answers the process's exit status.
pub fn main(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Watch(_)) {
        owner_only_files();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => return failed(&CliError::Runtime(err)),
    };
    let mut log = None;
    let result = runtime.block_on(run(cli, &mut log));
    // Shared locks dropped just now are still being let go in etcd.
    runtime.block_on(nap_state::Lock::released(LOCK_RELEASE));
    // A read of stdin may still sit on a blocking thread; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    // The last lines still queued for stderr are written now.
    drop(log);
    match result {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(err) => failed(&err),
    }
}

fn failed(err: &CliError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::FAILURE
}

/// Runs the command; `log` keeps the log's writer (of `serve` and `router`)
/// until the process ends.
async fn run(cli: Cli, log: &mut Option<LogGuard>) -> Result<u32, CliError> {
    // The hook runs with the settings of the process that ran git, whole.
    let (settings, hook) = match cli.command {
        Command::Hook(HookCommand::PreReceive) => {
            let input = HookInput::read()?;
            (input.settings.clone(), Some(input))
        }
        _ => (Settings::load(&cli.settings)?, None),
    };
    *log = init_tracing(&cli.command, &settings);
    if matches!(cli.command, Command::Serve | Command::Router) {
        raise_file_limit();
    }
    if let Command::Watch(args) = &cli.command {
        return Ok(nap_hooks::command::watch(args, &settings.store).await?.into());
    }
    let serving = matches!(cli.command, Command::Serve).then(|| settings.config.clone());
    let ctx = Context::open(settings).await?;
    // Once the store answers: a gateway that cannot start says one line.
    if let Some(file) = serving {
        warn_of_flags_beside_file(&cli.settings, file.as_deref());
    }
    let status = match cli.command {
        Command::Serve => {
            crate::server::serve(ctx).await?;
            0
        }
        Command::Router => {
            route_until_signalled(ctx).await?;
            0
        }
        Command::SshCommand { key } => {
            let key = crate::keys::get(&ctx.store, &key).await?;
            // Not UTF-8: refused, as `nap serve` refuses it.
            let sent = std::env::var_os("SSH_ORIGINAL_COMMAND").unwrap_or_default();
            let command = crate::remote::command_text(sent.as_encoded_bytes())?;
            ssh_command(&ctx, key, command).await
        }
        Command::Hook(HookCommand::PreReceive) => match hook {
            Some(HookInput { app, key, gateway, .. }) => {
                crate::hook::pre_receive(&ctx, app, key, gateway).await.unsigned_abs()
            }
            None => 1,
        },
        Command::Operate(command) => {
            until_signalled(Box::pin(commands::execute(
                &ctx,
                &Caller::Host,
                command,
                cli.output,
                Io::stdio_with_terminal(),
            )))
            .await
        }
        Command::Watch(_) => 0,
    };
    Ok(status)
}

/// `nap router`: the router alone until SIGTERM or Ctrl-C, then the
/// requests in flight finish.
async fn route_until_signalled(ctx: Arc<Context>) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let router = crate::router::Router::bind(&ctx.settings)?.ok_or(CliError::RouterOff)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let routing = tokio::spawn(router.run(ctx, stop.clone()));
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        let _ = routing.await;
        return Ok(());
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    stop.cancel();
    let _ = routing.await;
    Ok(())
}

/// Runs `command` for `key` under OpenSSH's forced command, as `nap serve`
/// runs one: should the key be removed, or come to do less, meanwhile, the
/// command ends as if its client had gone, and says why.
async fn ssh_command(ctx: &Arc<Context>, key: crate::keys::AuthorizedKey, command: &str) -> u32 {
    let stop = tokio_util::sync::CancellationToken::new();
    let following = tokio::spawn({
        let (ctx, stop) = (Arc::clone(ctx), stop.clone());
        async move { ctx.known_keys.follow(&ctx.store, &stop).await }
    });
    let session = ctx.known_keys.session(&key);
    let revoked = session.revoked();
    let io = Io::stdio_with_terminal();
    let ending = tokio::spawn({
        let (revoked, gone) = (revoked.clone(), io.client_gone.clone());
        async move {
            revoked.cancelled().await;
            gone.cancel();
        }
    });
    let mut status = until_signalled(Box::pin(crate::remote::route(ctx, &Caller::Key(key), command, io))).await;
    stop.cancel();
    ending.abort();
    let _ = following.await;
    if revoked.is_cancelled() {
        eprintln!("error: {}", session.why());
        status = 1;
    }
    status
}

/// Raises the soft limit on open files to the hard limit, as nginx's
/// `worker_rlimit_nofile` would: each of the router's client connections
/// takes a file, and each it forwards another; SSH connections and the
/// git processes of pushes take more.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let raised = getrlimit(Resource::RLIMIT_NOFILE)
        .and_then(|(soft, hard)| if soft < hard { setrlimit(Resource::RLIMIT_NOFILE, hard, hard) } else { Ok(()) });
    match (raised, getrlimit(Resource::RLIMIT_NOFILE)) {
        (Ok(()), Ok((limit, _))) => tracing::debug!(limit, "open files"),
        (Err(err), _) | (_, Err(err)) => tracing::warn!(error = %err, "cannot raise the limit on open files"),
    }
}

/// Makes every file and directory nap creates from here on its owner's
/// alone (umask 077), from the moment it exists: repos, the store, logs,
/// env files and the keys hold secrets, and a chmod after the fact leaves
/// a window. Git and the hooks it runs inherit it. `nap watch` keeps the
/// caller's umask: its templates say each file's mode, and the files are
/// for other programs.
fn owner_only_files() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Says which settings `nap serve` has from flags or `NAP_*` variables
/// that its settings file does not have: OpenSSH's forced command and
/// `nap VERB` on the host would run without them (another registry, say).
fn warn_of_flags_beside_file(given: &Settings, file: Option<&std::path::Path>) {
    let file = file.map_or_else(|| "no settings file".to_owned(), |path| path.display().to_string());
    match Settings::beside_file(given) {
        Ok(names) if !names.is_empty() => tracing::warn!(
            "settings {} come from flags or NAP_* variables, not from {file}: commands through OpenSSH \
             (nap ssh-command) and `nap VERB` on this host read only the file; put them there",
            names.join(", ")
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot compare the flags with the settings file"),
    }
}

/// Runs a command until it ends or a signal stops it. Stopping drops the
/// command, so what it holds is let go on the way out: deploy locks, and
/// containers frozen for a snapshot, which would otherwise stay frozen.
async fn until_signalled(command: impl Future<Output = u32>) -> u32 {
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

/// `serve`, `router` and `watch` log to stderr, through a writer thread
/// ([`crate::log_writer`]): the router logs a line per request, and its
/// requests never wait on stderr. Hooks and forced commands must not log to
/// stderr: it goes to the client, so they log to `DATA/logs/nap.log`. Local
/// commands log nothing unless NAP_LOG asks.
fn init_tracing(command: &Command, settings: &Settings) -> Option<LogGuard> {
    // A forced command's environment may be its client's: NAP_LOG too.
    let filter = match command {
        Command::SshCommand { .. } | Command::Hook(_) => "info".into(),
        _ => tracing_subscriber::EnvFilter::try_from_env("NAP_LOG").unwrap_or_else(|_| "info".into()),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match command {
        Command::Serve | Command::Router | Command::Watch(_) => {
            // Colours on a terminal; elsewhere, the plain format made for speed.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            match log_writer(std::io::stderr()) {
                Ok((writer, guard)) if ansi => {
                    builder.with_writer(writer).init();
                    return Some(guard);
                }
                Ok((writer, guard)) => {
                    builder.with_ansi(false).event_format(LineFormat).with_writer(writer).init();
                    return Some(guard);
                }
                // No thread to spare: each line is written where it is logged.
                Err(_) => builder.with_ansi(ansi).with_writer(std::io::stderr).init(),
            }
        }
        Command::Hook(_) | Command::SshCommand { .. } => {
            let dir = settings.data_dir().join("logs");
            let file = std::fs::create_dir_all(&dir).and_then(|()| {
                use std::os::unix::fs::OpenOptionsExt;
                // Others on the host have no business reading what nap did.
                std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join("nap.log"))
            });
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
    None
}
