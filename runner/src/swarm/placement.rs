//! Placement constraints (`placement APP node.labels.zone==a`), checked
//! here and then passed to the swarm verbatim.

use std::fmt;

/// One constraint, in the swarm's own syntax: `ATTRIBUTE==VALUE` or
/// `ATTRIBUTE!=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Constraint(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error(
        "malformed placement constraint {0:?}: expected ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, such as node.labels.zone==a"
    )]
    Malformed(String),
    #[error(
        "placement constraint {0:?}: nap places by node.id, node.role, node.labels.KEY, engine.labels.KEY or node.platform.os/arch"
    )]
    UnknownAttribute(String),
    #[error(
        "placement constraint {0:?}: place by node.id or node.labels, not by host name (several nodes may share one)"
    )]
    Hostname(String),
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let malformed = || ConstraintError::Malformed(text.to_owned());
        let (attribute, value) = text.split_once("==").or_else(|| text.split_once("!=")).ok_or_else(malformed)?;
        let (attribute, value) = (attribute.trim(), value.trim());
        let word = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':'))
        };
        if !word(attribute) || !word(value) || value.contains("==") || value.contains("!=") {
            return Err(malformed());
        }
        let label = |prefix: &str| attribute.strip_prefix(prefix).is_some_and(|key| !key.is_empty());
        if attribute == "node.hostname" {
            return Err(ConstraintError::Hostname(text.to_owned()));
        }
        let known = matches!(attribute, "node.id" | "node.role" | "node.platform.os" | "node.platform.arch")
            || label("node.labels.")
            || label("engine.labels.");
        if !known {
            return Err(ConstraintError::UnknownAttribute(text.to_owned()));
        }
        Ok(Constraint(text.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Constraint {
    type Error = ConstraintError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Constraint::parse(&text)
    }
}

impl From<Constraint> for String {
    fn from(constraint: Constraint) -> String {
        constraint.0
    }
}

#[cfg(test)]
mod tests {
    use super::{Constraint, ConstraintError};

    #[test]
    fn constraints_the_swarm_takes() {
        for good in ["node.labels.zone==a", "node.id!=abc123", "node.role==manager", "engine.labels.ssd==true"] {
            assert_eq!(Constraint::parse(good).map(|c| c.to_string()), Ok(good.to_owned()));
        }
    }

    #[test]
    fn constraints_refused() {
        assert!(matches!(Constraint::parse("node.hostname==a"), Err(ConstraintError::Hostname(_))));
        assert!(matches!(Constraint::parse("node.colour==red"), Err(ConstraintError::UnknownAttribute(_))));
        assert!(matches!(Constraint::parse("node.labels.==a"), Err(ConstraintError::UnknownAttribute(_))));
        for bad in ["zone", "node.labels.zone=a", "==a", "node.labels.zone==", "node.labels.zone==a b", "a==b==c"] {
            assert!(matches!(Constraint::parse(bad), Err(ConstraintError::Malformed(_))), "{bad}");
        }
    }
}
