//! The records behind HTTPS: an app's certificates, as every router reads
//! them, and its ACME state.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Secret;

/// A certificate the routers serve for one host of an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Certificate {
    /// PEM: the certificate, then the rest of its chain.
    pub chain: String,
    /// PEM: its private key. Never shown, never logged.
    pub key: Secret,
    /// Where it came from.
    pub source: CertSource,
    /// The issuer's common name (or whole name), as `certs` shows it.
    pub issuer: String,
    /// Every DNS name it covers.
    pub names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// `certs add`.
    Upload,
    /// Ordered by nap over ACME (`letsencrypt on`).
    Letsencrypt,
}

/// An app's ACME state: whether nap orders and renews its certificates,
/// and how the last order went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcmeState {
    pub enabled: bool,
    /// Why the last order failed; `None` once one succeeds.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_attempt: Option<OffsetDateTime>,
}
