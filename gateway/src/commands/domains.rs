//! `domains APP`, `domains add APP HOST`, `domains remove APP HOST`: the
//! hosts an app answers at on the router besides `APP.DOMAIN`. A host is
//! exact (`www.example.com`) or a wildcard of one label (`*.example.com`),
//! and belongs to one app only.

use clap::{Args, Subcommand};
use serde_json::json;

use super::{CommandError, Reply, existing_app};
use crate::caller::Caller;
use crate::context::Context;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DomainsArgs {
    /// The app whose hosts to list
    #[arg(required = true)]
    app: Option<String>,
    #[command(subcommand)]
    command: Option<DomainsCommand>,
}

#[derive(Debug, Subcommand)]
enum DomainsCommand {
    /// Route HOST (or *.DOMAIN) to the app
    Add { app: String, host: String },
    /// Stop routing HOST to the app
    #[command(alias = "rm")]
    Remove { app: String, host: String },
}

/// A host the router cannot take for an app.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid host {0:?}: use a DNS name like www.example.com, or *.example.com")]
    Invalid(String),
    #[error("{0} is an IP address: the router routes by name; use a DNS name like www.example.com")]
    Address(String),
    #[error("{host} belongs to app {owner}; remove it there first")]
    Taken { host: String, owner: String },
    #[error("{app} has no host {host}")]
    NotThere { app: String, host: String },
}

pub async fn run(ctx: &Context, caller: &Caller, args: DomainsArgs) -> Result<Reply, CommandError> {
    match args.command {
        Some(DomainsCommand::Add { app, host }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let host = parse_host(&host)?;
            if let Some(owner) = ctx.store.add_domain(app.as_str(), &host).await? {
                return Err(DomainError::Taken { host, owner }.into());
            }
            Ok(Reply::new(format!("{app} answers at {host} too"), json!({ "app": app.as_str(), "host": host })))
        }
        Some(DomainsCommand::Remove { app, host }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let host = parse_host(&host)?;
            if !ctx.store.remove_domain(app.as_str(), &host).await? {
                return Err(DomainError::NotThere { app: app.to_string(), host }.into());
            }
            Ok(Reply::new(format!("{app} no longer answers at {host}"), json!({ "app": app.as_str(), "host": host })))
        }
        None => {
            let app = existing_app(ctx, caller, args.app.as_deref().unwrap_or_default()).await?;
            let own = ctx.settings.app_url(app.as_str()).map(|_| ctx.settings.app_host(app.as_str()));
            let domains = ctx.store.domains(app.as_str()).await?;
            let mut lines: Vec<String> = own.iter().map(|host| format!("{host} (nap's)")).collect();
            lines.extend(domains.iter().cloned());
            let text = if lines.is_empty() {
                format!("{app} has no hosts; add one with: domains add {app} HOST")
            } else {
                lines.join("\n")
            };
            Ok(Reply::new(text, json!({ "app": app.as_str(), "default": own, "domains": domains })))
        }
    }
}

/// A host name as the router matches it: lower case, DNS labels, and at
/// most a leading `*.` label. An IP address is no name: every request to
/// that address would land on one app, and no ACME server certifies it.
fn parse_host(text: &str) -> Result<String, DomainError> {
    let host = text.trim_end_matches('.').to_ascii_lowercase();
    let top = host.rsplit('.').next().unwrap_or_default();
    if text.parse::<std::net::IpAddr>().is_ok() || (!top.is_empty() && top.chars().all(|c| c.is_ascii_digit())) {
        return Err(DomainError::Address(text.to_owned()));
    }
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let valid = host.len() <= 253 && name.contains('.') && name.split('.').all(label);
    if valid { Ok(host) } else { Err(DomainError::Invalid(text.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn hosts_are_dns_names_or_one_label_wildcards() {
        assert_eq!(parse_host("WWW.Example.com.").ok().as_deref(), Some("www.example.com"));
        assert_eq!(parse_host("*.example.com").ok().as_deref(), Some("*.example.com"));
        for address in ["10.0.0.1", "10.0.0.1.", "::1", "*.0.0.1"] {
            assert!(matches!(parse_host(address), Err(super::DomainError::Address(_))), "{address}");
        }
        for bad in ["", "localhost", "*.com.", "a..b", "-a.com", "a_b.com", "*.*.example.com", "a b.com", "a.com/x"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}
