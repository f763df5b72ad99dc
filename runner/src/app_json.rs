//! The parts of an `app.json` (Dokku's format, after Heroku's) that nap
//! reads: `formation` (how many instances of each type) and `healthchecks`
//! (when a new instance is ready). Anything else in it is left alone.

use std::collections::BTreeMap;

use crate::check::HealthCheck;
use crate::process::{Formation, MAX_INSTANCES, ProcessType};

/// The most bytes of app.json nap reads.
pub const MAX_APP_JSON: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AppJsonError {
    #[error("app.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("app.json: formation.{kind}.quantity is {quantity}, over {MAX_INSTANCES}")]
    Quantity { kind: ProcessType, quantity: u32 },
    #[error("app.json: healthchecks.{kind}: a check needs a path starting with '/'")]
    Path { kind: ProcessType },
    #[error("app.json: formation.{kind}: the Procfile has no {kind}")]
    NotInProcfile { kind: ProcessType },
}

/// What nap takes from an app.json.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppJson {
    /// The counts it declares; `ps scale` overrides them.
    pub formation: Formation,
    /// The checks of each type.
    pub healthchecks: BTreeMap<ProcessType, Vec<HealthCheck>>,
}

#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    formation: BTreeMap<ProcessType, Quantity>,
    #[serde(default)]
    healthchecks: BTreeMap<ProcessType, Vec<HealthCheck>>,
}

#[derive(serde::Deserialize)]
struct Quantity {
    quantity: Option<u32>,
}

impl AppJson {
    pub fn parse(text: &str) -> Result<AppJson, AppJsonError> {
        let document: Document = serde_json::from_str(text)?;
        let mut formation = Formation::default();
        for (kind, Quantity { quantity }) in document.formation {
            let Some(quantity) = quantity else { continue };
            if quantity > MAX_INSTANCES {
                return Err(AppJsonError::Quantity { kind, quantity });
            }
            formation.set(kind, quantity);
        }
        for (kind, checks) in &document.healthchecks {
            if checks.iter().any(|check| check.path.as_ref().is_some_and(|path| !path.starts_with('/'))) {
                return Err(AppJsonError::Path { kind: kind.clone() });
            }
        }
        Ok(AppJson { formation, healthchecks: document.healthchecks })
    }

    /// An app.json's text, or none.
    pub fn of(text: Option<&str>) -> Result<AppJson, AppJsonError> {
        text.map_or_else(|| Ok(AppJson::default()), AppJson::parse)
    }

    /// Refuses a formation that counts a type `procfile` does not run.
    pub fn check_against(&self, procfile: &crate::Procfile) -> Result<(), AppJsonError> {
        match self.formation.kinds().find(|kind| !procfile.declares(kind)) {
            Some(kind) => Err(AppJsonError::NotInProcfile { kind: kind.clone() }),
            None => Ok(()),
        }
    }

    /// The check that says a `web` instance is ready: the first with a path
    /// among its startup and readiness checks; `None`: any HTTP answer on
    /// `PORT`.
    pub fn web_check(&self) -> Option<&HealthCheck> {
        self.healthchecks.get(&ProcessType::web())?.iter().find(|check| check.path.is_some() && check.decides_start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dokku_app_json() {
        let text = r#"{
            "name": "hello",
            "scripts": {"dokku": {"predeploy": "x"}},
            "formation": {"web": {"quantity": 2, "max_parallel": 1}, "worker": {"quantity": 1}},
            "healthchecks": {"web": [
                {"type": "liveness", "path": "/live"},
                {"type": "startup", "name": "ready", "path": "/health", "content": "ok", "attempts": 3,
                 "timeout": 2, "wait": 1, "initialDelay": 1, "port": 8080}
            ]}
        }"#;
        let app = AppJson::parse(text).unwrap();
        assert_eq!(app.formation.count(&ProcessType::web()), 2);
        assert_eq!(app.formation.count(&ProcessType::parse("worker").unwrap()), 1);
        let check = app.web_check().unwrap();
        assert_eq!((check.path.as_deref(), check.content.as_deref()), (Some("/health"), Some("ok")));
        assert_eq!((check.attempts, check.port), (Some(3), Some(8080)));
    }

    #[test]
    fn malformed_app_json_is_one_line() {
        for text in [
            "{",
            r#"{"formation": {"web": {"quantity": -1}}}"#,
            r#"{"formation": {"web": {"quantity": 1000}}}"#,
            r#"{"formation": {"Web!": {"quantity": 1}}}"#,
            r#"{"healthchecks": {"web": [{"path": "health"}]}}"#,
            r#"{"healthchecks": {"web": [{"path": "/", "attempts": "three"}]}}"#,
        ] {
            let err = AppJson::parse(text).unwrap_err().to_string();
            assert!(err.starts_with("app.json: ") && !err.contains('\n'), "{text}: {err}");
        }
    }
}
