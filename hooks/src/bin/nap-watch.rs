//! `nap-watch`: nap's template hooks alone, small and static, to copy into
//! an image (`FROM scratch` or busybox) and run as its entrypoint:
//!
//! ```text
//! ENTRYPOINT ["/nap-watch", "--store", "etcd://etcd:2379", "--confdir", "/etc/nap/conf.d", "--exec", "--", "app"]
//! ```
//!
//! It takes `nap watch`'s arguments, and the store settings `nap` reads from
//! its flags, environment and nap.toml (here flags and environment only).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nap_hooks::source::Source;
use nap_hooks::watcher::WatchArgs;

#[derive(Debug, Parser)]
#[command(name = "nap-watch", version, about = "Watch keys, render templates into files, check and reload (nap watch)")]
struct Cli {
    /// Where keys live: etcd://HOST:PORT[,HOST:PORT...], or embedded (DATA_DIR/state.db)
    #[arg(long, env = "NAP_STORE", default_value = "embedded", value_name = "STORE")]
    store: String,
    /// The embedded store's directory
    #[arg(long, env = "NAP_DATA_DIR", default_value = "/var/lib/nap", value_name = "DIR")]
    data_dir: PathBuf,
    /// etcd user (the password comes from NAP_STORE_PASSWORD)
    #[arg(long, env = "NAP_STORE_USER", value_name = "USER")]
    store_user: Option<String>,
    /// etcd CA certificate (PEM): TLS
    #[arg(long, env = "NAP_STORE_CA", value_name = "FILE")]
    store_ca: Option<PathBuf>,
    /// etcd client certificate (PEM)
    #[arg(long, env = "NAP_STORE_CERT", value_name = "FILE")]
    store_cert: Option<PathBuf>,
    /// etcd client key (PEM)
    #[arg(long, env = "NAP_STORE_KEY", value_name = "FILE")]
    store_key: Option<PathBuf>,
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

async fn run(cli: Cli) -> Result<u8, Box<dyn std::error::Error>> {
    let source = if cli.watch.env {
        Source::Env
    } else if cli.store == "embedded" {
        std::fs::create_dir_all(&cli.data_dir)?;
        Source::Store(Arc::new(nap_state::Store::open_embedded(&cli.data_dir.join("state.db"))?))
    } else {
        let options = nap_state::EtcdOptions {
            user: cli.store_user,
            password: std::env::var("NAP_STORE_PASSWORD").ok(),
            ca: cli.store_ca,
            cert: cli.store_cert,
            key: cli.store_key,
            ..nap_state::EtcdOptions::from_url(&cli.store)?
        };
        Source::Store(Arc::new(nap_state::Store::open_etcd(&options).await?))
    };
    Ok(nap_hooks::command::watch(&cli.watch, source).await?)
}
