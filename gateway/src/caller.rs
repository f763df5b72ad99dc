//! Who is asking, and what they may touch.

use crate::app_name::AppName;
use crate::keys::AuthorizedKey;

#[derive(Debug, Clone)]
pub enum Caller {
    /// Someone on the host running `nap VERB` directly: an admin.
    Host,
    /// An SSH key, over `nap serve` or OpenSSH's forced command.
    Key(AuthorizedKey),
}

#[derive(Debug, thiserror::Error)]
pub enum Forbidden {
    #[error("key {key} may not use app {app}; an admin can allow it with: keys grant {key} {app}")]
    App { key: String, app: String },
    #[error("only admin keys may {0}")]
    AdminOnly(&'static str),
}

/// Who runs `nap VERB` on the host, as records name them: `host:USER`. A
/// key's name cannot hold a `:`, so no key passes for the host.
static HOST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", nix::unistd::getuid()));
    format!("host:{user}")
});

impl Caller {
    /// The name recorded as the cause of what this caller does.
    pub fn name(&self) -> &str {
        match self {
            Caller::Host => HOST.as_str(),
            Caller::Key(key) => &key.name,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Host => true,
            Caller::Key(key) => key.admin,
        }
    }

    /// Admins may use every app; other keys only the apps listed for them,
    /// matched exactly (`foo-staging` does not reach `foo`).
    pub fn may_use(&self, app: &AppName) -> bool {
        match self {
            Caller::Host => true,
            Caller::Key(key) => key.admin || key.apps.iter().any(|allowed| allowed == app.as_str()),
        }
    }

    pub fn check_app(&self, app: &AppName) -> Result<(), Forbidden> {
        if self.may_use(app) {
            Ok(())
        } else {
            Err(Forbidden::App { key: self.name().to_owned(), app: app.to_string() })
        }
    }

    pub fn check_admin(&self, what: &'static str) -> Result<(), Forbidden> {
        if self.is_admin() { Ok(()) } else { Err(Forbidden::AdminOnly(what)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(admin: bool, apps: &[&str]) -> Caller {
        Caller::Key(AuthorizedKey {
            name: "dev".into(),
            public_key: String::new(),
            fingerprint: String::new(),
            admin,
            apps: apps.iter().map(|&app| app.to_owned()).collect(),
            added_at: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("app name")
    }

    #[test]
    fn admins_and_the_host_reach_every_app_and_other_keys_only_their_own_exactly() {
        for caller in [Caller::Host, key(true, &[])] {
            assert!(caller.check_app(&app("shop")).is_ok() && caller.check_admin("manage keys").is_ok());
        }
        let dev = key(false, &["shop-staging"]);
        assert!(dev.check_app(&app("shop-staging")).is_ok());
        let refused = dev.check_app(&app("shop")).expect_err("shop-staging does not reach shop");
        assert_eq!(
            refused.to_string(),
            "key dev may not use app shop; an admin can allow it with: keys grant dev shop"
        );
        assert_eq!(
            dev.check_admin("manage keys").expect_err("not an admin").to_string(),
            "only admin keys may manage keys"
        );
        assert_eq!(dev.name(), "dev");
        let host = Caller::Host.name();
        assert!(host.starts_with("host:") && host.len() > 5, "{host}");
    }
}
