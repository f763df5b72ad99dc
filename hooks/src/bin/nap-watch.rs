//! `nap-watch`: nap's template hooks alone, small and static, to copy into
//! an image (`FROM scratch` or busybox) and run as its entrypoint:
//!
//! ```text
//! ENTRYPOINT ["/nap-watch", "--store", "etcd://etcd:2379", "--confdir", "/etc/nap/conf.d", "--exec", "--", "app"]
//! ```
//!
//! It takes `nap watch`'s arguments, and the store settings `nap` reads
//! (the same [`nap_state::StoreSettings`]), from flags and environment.

use std::process::ExitCode;

use clap::Parser;
use nap_hooks::watcher::WatchArgs;

#[derive(Debug, Parser)]
#[command(name = "nap-watch", version, about = "Watch keys, render templates into files, check and reload (nap watch)")]
struct Cli {
    #[command(flatten)]
    store: nap_state::StoreSettings,
    #[command(flatten)]
    watch: WatchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NAP_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(status) => ExitCode::from(status),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<u8, nap_hooks::command::CommandError> {
    nap_hooks::command::watch(&cli.watch, &cli.store).await
}
