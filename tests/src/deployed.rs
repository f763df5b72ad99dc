//! What most end-to-end tests start from: a gateway, an admin key, and an
//! app pushed to it.

use crate::{AppKind, AppRepo, Gateway, Key, Run, unique};

/// A gateway with an admin key and one app of `kind` pushed with it.
pub struct Deployed {
    pub gateway: Gateway,
    /// The admin key that pushed.
    pub key: Key,
    pub app: String,
    pub repo: AppRepo,
    /// The first push, which went through.
    pub push: Run,
}

impl Deployed {
    /// Pushes `kind` to `gateway` as a new app named after `prefix`, with
    /// a new admin key `admin`; the push must go through.
    pub fn push(gateway: Gateway, kind: AppKind, prefix: &str) -> Deployed {
        Self::push_as(gateway, "admin", kind, prefix)
    }

    /// The same, with the admin key named `key_name` (the push says who pushed).
    pub fn push_as(gateway: Gateway, key_name: &str, kind: AppKind, prefix: &str) -> Deployed {
        let key = gateway.user(key_name);
        let app = unique(prefix);
        let repo = AppRepo::new(kind);
        let push = repo.push(&gateway, &key, &app, "master");
        push.assert_ok();
        Deployed { gateway, key, app, repo, push }
    }

    /// The app's URL, as the push printed it.
    pub fn url(&self) -> String {
        self.push.url().unwrap_or_else(|| panic!("the push printed no URL:\n{}", self.push.stderr))
    }
}
