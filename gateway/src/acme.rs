//! Certificates from an ACME CA (Let's Encrypt by default): `letsencrypt
//! APP on` orders one for the app's hosts, the router answers the HTTP-01
//! challenges from the store, and `nap serve` renews each certificate 30
//! days before it expires. A failed order leaves the app on HTTP, says why
//! in the log and in `certs APP`, and is tried again at the next renewal
//! round.

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use nap_state::{AcmeState, CertSource, Certificate, LockError, LockSubject, Store, StoreError, layout};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Context;
use crate::router::tls::{Bundle, CertError};

/// A certificate this close to its expiry is renewed.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// How often `nap serve` looks for certificates to renew.
const RENEW_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How long an order may take to become ready, and then issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{0} has no host an ACME CA can check over HTTP (wildcards need DNS)")]
    NoHosts(String),
    #[error("ACME: {}", chain(.0))]
    Acme(#[from] instant_acme::Error),
    #[error("ACME: the CA refused {host}: {detail}")]
    Refused { host: String, detail: String },
    #[error("ACME: the order ended {0:?}")]
    Order(OrderStatus),
    #[error("ACME: the issued certificate is not usable: {0}")]
    Issued(#[from] CertError),
    #[error("ACME: the account's stored credentials are not readable: {0}")]
    Credentials(#[source] serde_json::Error),
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Orders a certificate for every host of `app` the CA can check over
/// HTTP (`APP.DOMAIN` and its exact domains) and stores it for the routers;
/// answers those hosts. The outcome is recorded in the app's ACME state.
pub async fn order(ctx: &Context, app: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<Vec<String>, AcmeError> {
    // One order per app at a time, whichever host of a shared store asks.
    let _lock = ctx.lock(LockSubject::Certificates { app }, "ACME order", &ctx.settings.host_name()).await?;
    let mut hosts = ctx.app_hosts(app).await?;
    hosts.retain(|host| !host.starts_with("*."));
    let outcome = order_hosts(ctx, app, &hosts, progress).await;
    let mut state = ctx.store.get_json::<AcmeState>(&layout::app_letsencrypt(app)).await?.unwrap_or_default();
    state.last_attempt = Some(OffsetDateTime::now_utc());
    state.last_error = outcome.as_ref().err().map(ToString::to_string);
    ctx.store.put_json(&layout::app_letsencrypt(app), &state).await?;
    match &outcome {
        Ok(()) => info!(%app, hosts = ?hosts, "ACME: certificate issued"),
        Err(err) => warn!(%app, error = %err, "ACME: no certificate"),
    }
    outcome.map(|()| hosts)
}

async fn order_hosts(
    ctx: &Context,
    app: &str,
    hosts: &[String],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), AcmeError> {
    if hosts.is_empty() {
        return Err(AcmeError::NoHosts(app.to_owned()));
    }
    let account = account(ctx).await?;
    progress(&format!("Ordering a certificate for {} from {}", hosts.join(", "), ctx.settings.acme_directory()));
    let identifiers: Vec<Identifier> = hosts.iter().map(|host| Identifier::Dns(host.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut tokens = Vec::new();
    let answered = answer_challenges(&ctx.store, &mut order, &mut tokens).await;
    let issued = match answered {
        Ok(()) => issue(&mut order, progress).await,
        Err(err) => Err(err),
    };
    for token in &tokens {
        let _ = ctx.store.delete(&layout::acme_challenge(token)).await;
    }
    let (chain, key) = issued?;
    let bundle = Bundle::parse(&chain, &key)?;
    let record = bundle.record(&chain, &key, CertSource::Letsencrypt);
    for host in hosts {
        ctx.store.put_json(&layout::app_cert(app, host), &record).await?;
    }
    progress(&format!("Issued by {}, valid until {}", record.issuer, record.not_after.date()));
    Ok(())
}

/// Puts each pending authorization's HTTP-01 answer in the store, where
/// every router finds it, and tells the CA to check.
async fn answer_challenges(
    store: &Store,
    order: &mut instant_acme::Order,
    tokens: &mut Vec<String>,
) -> Result<(), AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let host = authorization.identifier().to_string();
        let Some(mut challenge) = authorization.challenge(ChallengeType::Http01) else {
            return Err(AcmeError::Refused { host, detail: "it offers no HTTP-01 challenge".into() });
        };
        let token = challenge.token.clone();
        store.put(&layout::acme_challenge(&token), challenge.key_authorization().as_str().as_bytes()).await?;
        tokens.push(token);
        challenge.set_ready().await?;
    }
    Ok(())
}

/// Waits for the CA's checks, then has it issue; answers the chain and key (PEM).
async fn issue(
    order: &mut instant_acme::Order,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(String, String), AcmeError> {
    let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order(status));
    }
    progress("The CA checked every host; finalizing");
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&retries).await?;
    Ok((chain, key))
}

/// nap's account with the directory: from its stored credentials, or new.
async fn account(ctx: &Context) -> Result<Account, AcmeError> {
    let directory = ctx.settings.acme_directory();
    let builder = || match &ctx.settings.acme_directory_ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let key = layout::acme_account(&directory);
    if let Some(stored) = ctx.store.get(&key).await? {
        let credentials: AccountCredentials = serde_json::from_slice(&stored).map_err(AcmeError::Credentials)?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = ctx.settings.acme_email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?.create(&new, directory, None).await?;
    let text = serde_json::to_vec(&credentials).map_err(AcmeError::Credentials)?;
    ctx.store.put(&key, &text).await?;
    Ok(account)
}

/// Whether a certificate is due for renewal.
pub fn due(cert: &Certificate, now: OffsetDateTime) -> bool {
    cert.not_after - now <= RENEW_BEFORE
}

/// `nap serve`'s renewal round, every 12 hours until `stop`: each app with
/// `letsencrypt on` whose certificates are missing or due gets a new order.
pub async fn renew(ctx: &Context, stop: CancellationToken) {
    loop {
        if let Err(err) = renew_once(ctx).await {
            warn!(error = %err, "ACME: the renewal round failed");
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn renew_once(ctx: &Context) -> Result<(), AcmeError> {
    let now = OffsetDateTime::now_utc();
    for summary in ctx.store.apps().await? {
        let app = summary.record.name;
        let state = ctx.store.get_json::<AcmeState>(&layout::app_letsencrypt(&app)).await?;
        if !state.is_some_and(|state| state.enabled) {
            continue;
        }
        let certs = ctx.store.list_json::<Certificate>(&layout::app_certs(&app)).await?;
        if certs.is_empty() || certs.iter().any(|cert| due(cert, now)) {
            // A failure is recorded in the app's ACME state and logged by
            // `order`; a busy lock means another host orders it now.
            if let Err(AcmeError::Busy(err)) = order(ctx, &app, &|line| info!(%app, "ACME: {line}")).await {
                info!(%app, "ACME: {err}");
            }
        }
    }
    Ok(())
}

/// An error and its sources, as one line: the ACME client's own messages
/// ("client error (Connect)") say little without them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        let more = next.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use nap_state::{CertSource, Certificate};
    use time::{Duration, OffsetDateTime};

    use super::due;

    #[test]
    fn a_certificate_is_renewed_30_days_before_it_expires() {
        let now = OffsetDateTime::now_utc();
        let cert = |days: i64| Certificate {
            chain: String::new(),
            key: String::new().into(),
            source: CertSource::Letsencrypt,
            issuer: "test".into(),
            names: vec!["hello.example.com".into()],
            not_after: now + Duration::days(days),
            added_at: now,
        };
        assert!(!due(&cert(31), now));
        assert!(due(&cert(30), now));
        assert!(due(&cert(2), now));
        assert!(due(&cert(-1), now), "an expired one too");
    }
}
