//! HTTPS on the router, per app: `certs` (list, add, remove), `https APP
//! force|off` (plain HTTP redirected to HTTPS or not) and `letsencrypt APP
//! on|off` (certificates ordered and renewed over ACME). Private keys go
//! into the store and never come out: no command prints them.

use std::fmt::Write as _;

use clap::{Args, Subcommand, ValueEnum};
use nap_state::{AcmeState, CertSource, Certificate, layout};
use serde_json::json;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use super::table::Table;
use super::{CommandError, Reply, existing_app, with_reporter};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::hosts::{self, Reserved, wildcard_of};
use crate::router::tls::{Bundle, CertError, split_pem};

/// The most `certs add` reads: a chain of a few certificates and a key.
const MAX_PEM_INPUT: u64 = 1024 * 1024;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CertsArgs {
    /// The app whose certificates to list
    #[arg(required = true)]
    app: Option<String>,
    #[command(subcommand)]
    command: Option<CertsCommand>,
}

impl CertsArgs {
    /// `certs add` reads the PEM bundle from standard input.
    pub fn reads_input(&self) -> bool {
        matches!(self.command, Some(CertsCommand::Add { .. }))
    }
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Read a PEM certificate chain and its private key from standard input
    /// and serve it for each of the app's hosts it covers
    Add { app: String },
    /// Stop serving the certificate of HOST
    #[command(alias = "rm")]
    Remove { app: String, host: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpsMode {
    /// Redirect plain HTTP to HTTPS (308) where a certificate exists
    Force,
    /// Serve plain HTTP and HTTPS alike
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("reading the certificate from standard input: {0}")]
    ReadInput(#[source] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] CertError),
    #[error(
        "the certificate covers {covers}, none of which {app} answers at ({hosts}); add the host with: domains add {app} HOST"
    )]
    NotForApp { app: String, covers: String, hosts: String },
    #[error("the certificate is for {host}, which is app {owner}'s, not {app}'s")]
    OtherApps { app: String, host: String, owner: String },
    #[error("{app} has no certificate for {host}")]
    NotThere { app: String, host: String },
    #[error(transparent)]
    Acme(#[from] crate::acme::AcmeError),
}

pub async fn certs(ctx: &Context, caller: &Caller, args: CertsArgs, io: &mut Io) -> Result<Reply, CommandError> {
    match args.command {
        Some(CertsCommand::Add { app }) => add(ctx, &existing_app(ctx, caller, &app).await?, io).await,
        Some(CertsCommand::Remove { app, host }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let key = layout::app_cert(app.as_str(), &host);
            if ctx.store.get(&key).await?.is_none() {
                return Err(CertsError::NotThere { app: app.to_string(), host }.into());
            }
            ctx.store.delete(&key).await?;
            Ok(Reply::new(
                format!("{app} no longer has a certificate for {host}"),
                json!({ "app": app.as_str(), "host": host }),
            ))
        }
        None => list(ctx, &existing_app(ctx, caller, args.app.as_deref().unwrap_or_default()).await?).await,
    }
}

/// Whether a certificate for `names` serves `host`: it names the host, or
/// the wildcard the router would pick for it.
fn covers(names: &[String], host: &str) -> bool {
    let wildcard = wildcard_of(host);
    names.iter().any(|name| name == host || Some(name) == wildcard.as_ref())
}

async fn add(ctx: &Context, app: &AppName, io: &mut Io) -> Result<Reply, CommandError> {
    let mut pem = String::new();
    (&mut io.stdin).take(MAX_PEM_INPUT).read_to_string(&mut pem).await.map_err(CertsError::ReadInput)?;
    let (chain, key) = split_pem(&pem);
    let bundle = Bundle::parse(&chain, &key).map_err(CertsError::from)?;
    let hosts = ctx.app_hosts(app.as_str()).await?;
    let served: Vec<String> = hosts.iter().filter(|host| covers(&bundle.names, host)).cloned().collect();
    if served.is_empty() {
        if let Some((host, owner)) = owner_of_any(ctx, app, &bundle.names).await? {
            return Err(CertsError::OtherApps { app: app.to_string(), host, owner }.into());
        }
        return Err(CertsError::NotForApp {
            app: app.to_string(),
            covers: bundle.names.join(", "),
            hosts: hosts.join(", "),
        }
        .into());
    }
    let record = bundle.record(&chain, &key, CertSource::Upload);
    for host in &served {
        ctx.store.put_json(&layout::app_cert(app.as_str(), host), &record).await?;
    }
    Ok(Reply::new(
        format!(
            "{app} serves HTTPS for {} (issued by {}, valid until {})",
            served.join(", "),
            record.issuer,
            record.not_after.date()
        ),
        json!({ "app": app.as_str(), "hosts": served, "issuer": record.issuer, "not_after": rfc3339(record.not_after) }),
    ))
}

/// The first of `names` that another app than `app` has or is kept for,
/// with that app.
async fn owner_of_any(
    ctx: &Context,
    app: &AppName,
    names: &[String],
) -> Result<Option<(String, String)>, CommandError> {
    let domain = ctx.settings.domain();
    for name in names {
        let owner = match hosts::reserved(name, &domain) {
            Reserved::ForApp(owner) => Some(owner.to_owned()),
            Reserved::ForAdmins => None,
            Reserved::No => match ctx.store.domain_owner(name).await? {
                Some(owner) => Some(owner),
                None => match wildcard_of(name) {
                    Some(wildcard) => ctx.store.domain_owner(&wildcard).await?,
                    None => None,
                },
            },
        };
        if let Some(owner) = owner.filter(|owner| owner != app.as_str()) {
            return Ok(Some((name.clone(), owner)));
        }
    }
    Ok(None)
}

async fn list(ctx: &Context, app: &AppName) -> Result<Reply, CommandError> {
    let prefix = layout::app_certs(app.as_str());
    let mut rows = Vec::new();
    let mut table = Table::new(&["HOST", "SOURCE", "ISSUER", "EXPIRES"]);
    let now = OffsetDateTime::now_utc();
    for (key, value) in ctx.store.list(&prefix).await? {
        let host = key[prefix.len()..].to_owned();
        let Ok(cert) = serde_json::from_slice::<Certificate>(&value) else { continue };
        let source = match cert.source {
            CertSource::Upload => "upload",
            CertSource::Letsencrypt => "letsencrypt",
        };
        let days = (cert.not_after - now).whole_days();
        table.row(&[&host, source, &cert.issuer, &format!("{} ({days} days)", cert.not_after.date())]);
        rows.push(json!({
            "host": host,
            "source": source,
            "issuer": cert.issuer,
            "names": cert.names,
            "not_after": rfc3339(cert.not_after),
        }));
    }
    let mut text = if rows.is_empty() {
        format!("{app} has no certificates; add one with: certs add {app} < fullchain-and-key.pem\n")
    } else {
        table.into_text()
    };
    let acme = ctx.store.get_json::<AcmeState>(&layout::app_letsencrypt(app.as_str())).await?;
    if let Some(acme) = &acme {
        let _ = write!(text, "letsencrypt: {}", if acme.enabled { "on" } else { "off" });
        if let Some(error) = &acme.last_error {
            let _ = write!(text, "; the last order failed: {error}");
        }
        text.push('\n');
    }
    let force = ctx.store.get(&layout::app_https(app.as_str())).await?.is_some_and(|v| v == b"force");
    text.push_str(if force {
        "https: force (plain HTTP is redirected)"
    } else {
        "https: off (plain HTTP is served too)"
    });
    Ok(Reply::new(
        text,
        json!({
            "app": app.as_str(),
            "certs": rows,
            "https": if force { "force" } else { "off" },
            "letsencrypt": acme.map(|acme| json!({
                "enabled": acme.enabled,
                "last_error": acme.last_error,
                "last_attempt": acme.last_attempt.map(rfc3339),
            })),
        }),
    ))
}

/// `https APP [force|off]`.
pub async fn https(ctx: &Context, caller: &Caller, app: &str, mode: Option<HttpsMode>) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, app).await?;
    let key = layout::app_https(app.as_str());
    match mode {
        Some(HttpsMode::Force) => ctx.store.put(&key, b"force").await?,
        Some(HttpsMode::Off) => {
            ctx.store.delete(&key).await?;
        }
        None => {}
    }
    let force = ctx.store.get(&key).await?.is_some_and(|v| v == b"force");
    let text = if force {
        format!("{app}: plain HTTP gets 308 to HTTPS on hosts with a certificate")
    } else {
        format!("{app}: plain HTTP and HTTPS are both served")
    };
    Ok(Reply::new(text, json!({ "app": app.as_str(), "https": if force { "force" } else { "off" } })))
}

/// `letsencrypt APP [on|off]`: on orders a certificate now, and `nap serve`
/// renews it; off stops renewing (the certificates stay until removed).
pub async fn letsencrypt(
    ctx: &Context,
    caller: &Caller,
    app: &str,
    switch: Option<Switch>,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    let app = existing_app(ctx, caller, app).await?;
    let key = layout::app_letsencrypt(app.as_str());
    let mut state = ctx.store.get_json::<AcmeState>(&key).await?.unwrap_or_default();
    match switch {
        None => {}
        Some(Switch::Off) => {
            state.enabled = false;
            ctx.store.put_json(&key, &state).await?;
        }
        Some(Switch::On) => {
            state.enabled = true;
            ctx.store.put_json(&key, &state).await?;
            let name = app.as_str();
            let hosts =
                with_reporter(
                    io,
                    |report| async move { crate::acme::order(ctx, name, &|line| report.step(line)).await },
                )
                .await
                .map_err(CertsError::from)?;
            return Ok(Reply::new(
                format!("{app} serves HTTPS for {} with a certificate from ACME; nap renews it", hosts.join(", ")),
                json!({ "app": app.as_str(), "enabled": true, "hosts": hosts }),
            ));
        }
    }
    let text = match (state.enabled, &state.last_error) {
        (true, Some(error)) => format!("letsencrypt is on for {app}; the last order failed: {error}"),
        (true, None) => format!("letsencrypt is on for {app}"),
        (false, _) => format!("letsencrypt is off for {app}"),
    };
    Ok(Reply::new(text, json!({ "app": app.as_str(), "enabled": state.enabled, "last_error": state.last_error })))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
