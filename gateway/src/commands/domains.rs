//! `domains APP`, `domains add APP HOST`, `domains remove APP HOST`: the
//! hosts an app answers at on the router besides `APP.DOMAIN`. A host is
//! exact (`www.example.com`) or a wildcard of one label (`*.example.com`),
//! and belongs to one app only.

use clap::{Args, Subcommand};
use serde_json::json;

use super::{CommandError, Reply, existing_app};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::Context;
use crate::hosts::{self, HostName, HostTaken, InvalidHost, Reserved};
use nap_state::DomainGrant;
use tracing::info;

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

/// A host the router cannot take for an app, or let go of.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Invalid(#[from] InvalidHost),
    #[error(transparent)]
    Taken(#[from] HostTaken),
    #[error("{host} is {app}'s own host already")]
    Own { app: String, host: String },
    #[error("{app} has no host {host}")]
    NotThere { app: String, host: String },
}

pub async fn run(ctx: &Context, caller: &Caller, args: DomainsArgs) -> Result<Reply, CommandError> {
    match args.command {
        Some(DomainsCommand::Add { app, host }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let host = HostName::parse(&host).map_err(DomainError::from)?;
            claim(ctx, caller, &app, &host).await?;
            Ok(Reply::new(
                format!("{app} answers at {host} too"),
                json!({ "app": app.as_str(), "host": host.as_str() }),
            ))
        }
        Some(DomainsCommand::Remove { app, host }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let host = HostName::parse(&host).map_err(DomainError::from)?;
            if !ctx.store.remove_domain(app.as_str(), host.as_str()).await? {
                return Err(DomainError::NotThere { app: app.to_string(), host: host.to_string() }.into());
            }
            Ok(Reply::new(
                format!("{app} no longer answers at {host}"),
                json!({ "app": app.as_str(), "host": host.as_str() }),
            ))
        }
        None => {
            let app = existing_app(ctx, caller, args.app.as_deref().unwrap_or_default()).await?;
            let own = ctx.settings.app_url(app.as_str()).map(|_| ctx.settings.app_host(app.as_str()));
            let grants = ctx.store.domain_grants(app.as_str()).await?;
            let domain = ctx.settings.domain();
            let mut lines: Vec<String> = own.iter().map(|host| format!("{host} (nap's)")).collect();
            // A host claimed before nap kept names for their apps is not routed.
            lines.extend(grants.iter().map(|(host, grant)| {
                match hosts::check_reserved(host, &domain, app.as_str(), *grant == DomainGrant::Admin) {
                    Ok(()) => host.clone(),
                    Err(why) => format!("{host} (not routed: {why})"),
                }
            }));
            let domains: Vec<&String> = grants.iter().map(|(host, _)| host).collect();
            let text = if lines.is_empty() {
                format!("{app} has no hosts; add one with: domains add {app} HOST")
            } else {
                lines.join("\n")
            };
            Ok(Reply::new(text, json!({ "app": app.as_str(), "default": own, "domains": domains })))
        }
    }
}

/// Claims `host` for `app`: refused when nap keeps it for another app (or
/// for admins), when another app holds it, or when it is under another
/// app's wildcard.
async fn claim(ctx: &Context, caller: &Caller, app: &AppName, host: &HostName) -> Result<(), CommandError> {
    let domain = ctx.settings.domain();
    if host.as_str() == ctx.settings.app_host(app.as_str()) {
        return Err(DomainError::Own { app: app.to_string(), host: host.to_string() }.into());
    }
    hosts::check_reserved(host.as_str(), &domain, app.as_str(), caller.is_admin()).map_err(DomainError::from)?;
    let reserved = hosts::reserved(host.as_str(), &domain);
    if !host.is_wildcard()
        && reserved == Reserved::No
        && let Some(wildcard) = hosts::wildcard_of(host.as_str())
        && let Some(owner) = ctx.store.domain_owner(&wildcard).await?
        && owner != app.as_str()
    {
        return Err(DomainError::from(HostTaken::UnderWildcard { host: host.to_string(), wildcard, owner }).into());
    }
    let grant = if reserved == Reserved::ForAdmins { DomainGrant::Admin } else { DomainGrant::Claim };
    let Some(owner) = ctx.store.add_domain(app.as_str(), host.as_str(), grant).await? else { return Ok(()) };
    // A name nap keeps for this app, claimed by another before it kept it:
    // the app's to take back.
    if reserved == Reserved::ForApp(app.as_str()) && ctx.store.take_domain(app.as_str(), host.as_str(), &owner).await? {
        info!(%app, %host, from = %owner, "took back a host claimed before nap kept it for this app");
        return Ok(());
    }
    Err(DomainError::from(HostTaken::Claimed { host: host.to_string(), owner }).into())
}
