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
    #[error("key {key} may not use app {app}; an admin can allow it with: keys add {key} --apps {app}")]
    App { key: String, app: String },
    #[error("only admin keys may {0}")]
    AdminOnly(&'static str),
}

impl Caller {
    /// The name recorded as the cause of what this caller does.
    pub fn name(&self) -> &str {
        match self {
            Caller::Host => "admin",
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
