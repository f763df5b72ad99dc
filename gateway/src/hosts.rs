//! Host names and whom they belong to: the one set of rules that `domains
//! add`, `certs add` and the router's route table all follow.
//!
//! Under nap's domain (`DOMAIN`), names are nap's to give: `APP.DOMAIN` is
//! app `APP`'s whether or not the app exists yet, and so is every name nap
//! makes for it (`BRANCH--APP.DOMAIN` for previews) and every name below
//! those (`www.APP.DOMAIN`, `*.APP.DOMAIN`). `DOMAIN` itself, `*.DOMAIN`,
//! the wildcard that covers `DOMAIN` and names no app can have are the
//! admins'. Outside the domain, a host
//! belongs to the first app that claims it (`domains add`), and a claimed
//! wildcard (`*.example.com`) covers the names one label below it.

use crate::app_name::AppName;

/// A host name as the router matches it: lower case, DNS labels, and at
/// most a leading `*.` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

#[derive(Debug, thiserror::Error)]
pub enum InvalidHost {
    #[error("invalid host {0:?}: use a DNS name like www.example.com, or *.example.com")]
    Invalid(String),
    #[error("{0} is an IP address: the router routes by name; use a DNS name like www.example.com")]
    Address(String),
}

impl HostName {
    /// Reads a host as a user writes it (`WWW.Example.com.` is
    /// `www.example.com`). An IP address is no name: every request to that
    /// address would land on one app, and no ACME server certifies it.
    pub fn parse(text: &str) -> Result<HostName, InvalidHost> {
        let host = text.trim_end_matches('.').to_ascii_lowercase();
        let top = host.rsplit('.').next().unwrap_or_default();
        if text.parse::<std::net::IpAddr>().is_ok() || (!top.is_empty() && top.chars().all(|c| c.is_ascii_digit())) {
            return Err(InvalidHost::Address(text.to_owned()));
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
        if valid { Ok(HostName(host)) } else { Err(InvalidHost::Invalid(text.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The wildcard that covers `host`: `*.example.com` for `www.example.com`,
/// one label deep. The one rule for routes and certificates alike.
pub fn wildcard_of(host: &str) -> Option<String> {
    let (_, parent) = host.split_once('.')?;
    Some(format!("*.{parent}"))
}

/// What nap itself says of a host under its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved<'h> {
    /// Outside nap's domain: whoever claims it first.
    No,
    /// `APP.DOMAIN`, a name nap makes for `APP` (`BRANCH--APP.DOMAIN`), or
    /// one below those: `APP`'s, whether or not it exists yet.
    ForApp(&'h str),
    /// `DOMAIN`, `*.DOMAIN`, or a name no app can have: admins only.
    ForAdmins,
}

/// Whom nap reserves `host` for, under `domain` (both lower case, as
/// [`HostName`] and `Settings::domain` give them).
pub fn reserved<'h>(host: &'h str, domain: &str) -> Reserved<'h> {
    // The domain itself, and the wildcard one label above it, which covers it.
    if host == domain || wildcard_of(domain).is_some_and(|above| above == host) {
        return Reserved::ForAdmins;
    }
    let Some(below) = host.strip_suffix(domain).and_then(|rest| rest.strip_suffix('.')) else {
        return Reserved::No;
    };
    // The label right under the domain names the app; previews put their
    // branch before a `--` (`pr-7--shop`), which no new app name holds.
    let label = below.rsplit('.').next().unwrap_or(below);
    let app = label.rsplit("--").next().unwrap_or(label);
    if label == "*" || AppName::parse(app).is_err() { Reserved::ForAdmins } else { Reserved::ForApp(app) }
}

/// Why an app may not have a host.
#[derive(Debug, thiserror::Error)]
pub enum HostTaken {
    #[error("{host} is app {owner}'s own host: nap keeps APP.{domain} and the names below it for APP")]
    Reserved { host: String, owner: String, domain: String },
    #[error("{host} is kept for nap's admins: only an admin key may route it")]
    AdminsOnly { host: String },
    #[error("{host} belongs to app {owner}; remove it there first")]
    Claimed { host: String, owner: String },
    #[error("{host} is under {wildcard}, which belongs to app {owner}")]
    UnderWildcard { host: String, wildcard: String, owner: String },
}

/// Whether `app` may route `host` as far as nap's reservations go (claims
/// outside the domain are the store's): a name reserved for `app`, one
/// outside the domain, or one for admins when `admin`.
pub fn check_reserved(host: &str, domain: &str, app: &str, admin: bool) -> Result<(), HostTaken> {
    match reserved(host, domain) {
        Reserved::No => Ok(()),
        Reserved::ForApp(owner) if owner == app => Ok(()),
        Reserved::ForAdmins if admin => Ok(()),
        Reserved::ForApp(owner) => {
            Err(HostTaken::Reserved { host: host.to_owned(), owner: owner.to_owned(), domain: domain.to_owned() })
        }
        Reserved::ForAdmins => Err(HostTaken::AdminsOnly { host: host.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_dns_names_or_one_label_wildcards() {
        assert_eq!(HostName::parse("WWW.Example.com.").ok().map(|h| h.0).as_deref(), Some("www.example.com"));
        assert_eq!(HostName::parse("*.example.com").ok().map(|h| h.0).as_deref(), Some("*.example.com"));
        for address in ["10.0.0.1", "10.0.0.1.", "::1", "*.0.0.1"] {
            assert!(matches!(HostName::parse(address), Err(InvalidHost::Address(_))), "{address}");
        }
        for bad in ["", "localhost", "*.com.", "a..b", "-a.com", "a_b.com", "*.*.example.com", "a b.com", "a.com/x"] {
            assert!(HostName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_under_the_domain_are_reserved_for_the_app_they_name() {
        let domain = "apps.example.com";
        for (host, app) in [
            ("shop.apps.example.com", "shop"),
            ("www.shop.apps.example.com", "shop"),
            ("*.shop.apps.example.com", "shop"),
            ("pr-7--shop.apps.example.com", "shop"),
            ("a--b--shop.apps.example.com", "shop"),
            ("not-yet.apps.example.com", "not-yet"),
        ] {
            assert_eq!(reserved(host, domain), Reserved::ForApp(app), "{host}");
        }
        for host in [
            "apps.example.com",
            "*.apps.example.com",
            "*.example.com",
            "1shop.apps.example.com",
            "x.--.apps.example.com",
        ] {
            assert_eq!(reserved(host, domain), Reserved::ForAdmins, "{host}");
        }
        for host in ["www.example.com", "*.other.example.com", "apps.example.com.evil.test", "xapps.example.com"] {
            assert_eq!(reserved(host, domain), Reserved::No, "{host}");
        }
        assert!(check_reserved("shop.apps.example.com", domain, "shop", false).is_ok());
        let taken = check_reserved("www.shop.apps.example.com", domain, "other", true);
        assert!(matches!(taken, Err(HostTaken::Reserved { owner, .. }) if owner == "shop"), "not even for an admin");
        assert!(matches!(check_reserved("*.apps.example.com", domain, "x", false), Err(HostTaken::AdminsOnly { .. })));
        assert!(check_reserved("*.apps.example.com", domain, "other", true).is_ok());
        assert!(check_reserved("www.example.com", domain, "other", false).is_ok());
    }
}
