//! App names: `^[a-z][a-z0-9-]{0,62}$`, checked before a name touches a path.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid app name {0:?}: use 1-63 lower-case letters, digits and '-', starting with a letter")]
pub struct InvalidAppName(pub String);

/// A name an existing app may have, but a new one may not: nap makes
/// preview hosts as `BRANCH--APP.DOMAIN` (see `hosts.rs`), and `APP.DOMAIN`
/// must be a DNS name.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "app name {0:?} cannot be used for a new app: it may not hold \"--\" (nap keeps it for preview hosts) or end with '-'"
)]
pub struct ReservedAppName(pub String);

impl AppName {
    /// Whether a new app may take this name.
    pub fn check_new(&self) -> Result<(), ReservedAppName> {
        if self.0.contains("--") || self.0.ends_with('-') { Err(ReservedAppName(self.0.clone())) } else { Ok(()) }
    }

    pub fn parse(name: &str) -> Result<AppName, InvalidAppName> {
        let mut chars = name.chars();
        let valid = name.len() <= 63
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid { Ok(AppName(name.to_owned())) } else { Err(InvalidAppName(name.to_owned())) }
    }

    /// Parses the repo argument git sends: `'app'`, `'/app'` or `'app.git'`.
    pub fn from_repo_path(path: &str) -> Result<AppName, InvalidAppName> {
        let name = path.strip_prefix('/').unwrap_or(path);
        let name = name.strip_suffix(".git").unwrap_or(name);
        AppName::parse(name).map_err(|_| InvalidAppName(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = InvalidAppName;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        AppName::parse(&name)
    }
}

impl From<AppName> for String {
    fn from(app: AppName) -> String {
        app.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::AppName;

    #[test]
    fn accepts_exactly_the_documented_names() {
        for good in ["a", "hello", "my-app-2", &format!("a{}", "b".repeat(62))] {
            assert!(AppName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1app", "-app", "Hello", "app_x", "../x", "a;rm -rf /", "a b", "'a'", &"a".repeat(64)] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_app_keeps_clear_of_preview_hosts() {
        assert!(AppName::parse("my-app").unwrap().check_new().is_ok());
        for name in ["pr-1--shop", "a--", "shop-"] {
            assert!(AppName::parse(name).unwrap().check_new().is_err(), "{name}");
        }
    }

    #[test]
    fn reads_the_repo_path_forms_git_sends() {
        for path in ["hello", "/hello", "hello.git", "/hello.git"] {
            assert_eq!(AppName::from_repo_path(path).unwrap().as_str(), "hello");
        }
        for bad in ["/", "../hello", "/srv/hello", "hello/", ".git"] {
            assert!(AppName::from_repo_path(bad).is_err(), "{bad}");
        }
    }
}
