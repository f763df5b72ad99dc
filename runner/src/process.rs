//! An app's processes: its types (`web`, `worker`, ...) and their commands,
//! read from a Heroku-style `Procfile`, and its formation, how many
//! instances of each type run.

use std::collections::BTreeMap;
use std::fmt;

/// The most types a Procfile may declare.
const MAX_TYPES: usize = 32;
/// The most instances of one type.
pub const MAX_INSTANCES: u32 = 100;

/// A process type: 1-30 lower-case letters, digits and `-`, starting with a
/// letter or digit. `web` gets `PORT` and the app's traffic; `release` runs
/// once per release, before its instances start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessType(String);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid process type {0:?}: use 1-30 lower-case letters, digits and '-'")]
pub struct InvalidProcessType(pub String);

impl ProcessType {
    pub const WEB: &'static str = "web";
    pub const RELEASE: &'static str = "release";

    pub fn parse(name: &str) -> Result<ProcessType, InvalidProcessType> {
        let valid = (1..=30).contains(&name.len())
            && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !name.starts_with('-');
        if valid { Ok(ProcessType(name.to_owned())) } else { Err(InvalidProcessType(name.to_owned())) }
    }

    pub fn web() -> ProcessType {
        ProcessType(Self::WEB.to_owned())
    }

    /// Gets `PORT` and traffic, and is checked over HTTP.
    pub fn is_web(&self) -> bool {
        self.0 == Self::WEB
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProcessType {
    type Error = InvalidProcessType;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        ProcessType::parse(&name)
    }
}

impl From<ProcessType> for String {
    fn from(kind: ProcessType) -> String {
        kind.0
    }
}

impl fmt::Display for ProcessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a Procfile was refused; `line` counts from 1.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcfileError {
    #[error("Procfile line {line}: expected `type: command`")]
    NoColon { line: usize },
    #[error("Procfile line {line}: {source}")]
    BadType {
        line: usize,
        #[source]
        source: InvalidProcessType,
    },
    #[error("Procfile line {line}: {kind} has no command")]
    NoCommand { line: usize, kind: ProcessType },
    #[error("Procfile line {line}: {kind} is declared twice")]
    Twice { line: usize, kind: ProcessType },
    #[error("Procfile line {line}: unbalanced quotes in the command")]
    Quotes { line: usize },
    #[error("Procfile line {line}: more than {MAX_TYPES} process types")]
    TooMany { line: usize },
}

/// The commands of an app's process types. Without a Procfile, `web` runs
/// the image's own command (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procfile {
    commands: BTreeMap<ProcessType, String>,
}

impl Procfile {
    /// Reads Heroku's format: one `type: command` per line; blank lines and
    /// lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Procfile, ProcfileError> {
        let mut commands = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (kind, command) = trimmed.split_once(':').ok_or(ProcfileError::NoColon { line })?;
            let kind = ProcessType::parse(kind.trim()).map_err(|source| ProcfileError::BadType { line, source })?;
            let command = command.trim();
            if command.is_empty() {
                return Err(ProcfileError::NoCommand { line, kind });
            }
            if shlex::split(command).is_none_or(|words| words.is_empty()) {
                return Err(ProcfileError::Quotes { line });
            }
            if commands.contains_key(&kind) {
                return Err(ProcfileError::Twice { line, kind });
            }
            if commands.len() == MAX_TYPES {
                return Err(ProcfileError::TooMany { line });
            }
            commands.insert(kind, command.to_owned());
        }
        Ok(Procfile { commands })
    }

    /// A Procfile's text, or none: then `web` runs the image's command.
    pub fn of(text: Option<&str>) -> Result<Procfile, ProcfileError> {
        text.map_or_else(|| Ok(Procfile::default()), Procfile::parse)
    }

    /// The types that run as instances (`release` does not), `web` always
    /// among them.
    pub fn types(&self) -> Vec<ProcessType> {
        let mut types: Vec<ProcessType> =
            self.commands.keys().filter(|kind| kind.as_str() != ProcessType::RELEASE).cloned().collect();
        if !types.iter().any(ProcessType::is_web) {
            types.insert(0, ProcessType::web());
        }
        types
    }

    pub fn declares(&self, kind: &ProcessType) -> bool {
        kind.is_web() || (kind.as_str() != ProcessType::RELEASE && self.commands.contains_key(kind))
    }

    /// The command line of `kind`, as the Procfile wrote it.
    pub fn command_line(&self, kind: &str) -> Option<&str> {
        self.commands.iter().find(|(k, _)| k.as_str() == kind).map(|(_, command)| command.as_str())
    }

    /// The words `kind` runs, split as a shell would but run without one;
    /// `None`: the image's own command.
    pub fn argv(&self, kind: &str) -> Option<Vec<String>> {
        self.command_line(kind).and_then(shlex::split)
    }

    /// The release phase's words, if the Procfile has one.
    pub fn release(&self) -> Option<Vec<String>> {
        self.argv(ProcessType::RELEASE)
    }
}

/// How many instances of each type run. A type it does not name runs as
/// many as its default: one `web`, none of the others.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Formation(BTreeMap<ProcessType, u32>);

impl Formation {
    /// The count of `kind`: as set, else its default.
    pub fn count(&self, kind: &ProcessType) -> u32 {
        self.0.get(kind).copied().unwrap_or(u32::from(kind.is_web()))
    }

    pub fn set(&mut self, kind: ProcessType, count: u32) {
        self.0.insert(kind, count);
    }

    /// The types it sets a count for.
    pub fn kinds(&self) -> impl Iterator<Item = &ProcessType> {
        self.0.keys()
    }

    /// This formation where it sets a count, else `defaults`'s (app.json's).
    #[must_use]
    pub fn over(&self, defaults: &Formation) -> Formation {
        let mut merged = defaults.clone();
        merged.0.extend(self.0.iter().map(|(k, v)| (k.clone(), *v)));
        merged
    }

    /// What runs of `procfile`: each of its types and its count, in order.
    pub fn of(&self, procfile: &Procfile) -> Vec<(ProcessType, u32)> {
        procfile.types().into_iter().map(|kind| (kind.clone(), self.count(&kind))).collect()
    }
}

/// `web=2 worker=1`: one change of `ps scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub kind: ProcessType,
    pub count: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    #[error("expected TYPE=COUNT, got {0:?}")]
    Shape(String),
    #[error(transparent)]
    Type(#[from] InvalidProcessType),
    #[error("invalid count {count:?} for {kind}: use a whole number from 0 to {MAX_INSTANCES}")]
    Count { kind: ProcessType, count: String },
}

impl std::str::FromStr for Scale {
    type Err = ScaleError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, count) = text.split_once('=').ok_or_else(|| ScaleError::Shape(text.to_owned()))?;
        let kind = ProcessType::parse(kind)?;
        match count.parse::<u32>() {
            Ok(n) if n <= MAX_INSTANCES => Ok(Scale { kind, count: n }),
            _ => Err(ScaleError::Count { kind, count: count.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfiles_as_heroku_reads_them() {
        let procfile = Procfile::parse(
            "# the app\nweb: /app/server --port 5000\n\nworker: /app/worker --queue 'de fault'\nrelease: /app/migrate\n",
        )
        .unwrap();
        let types: Vec<String> = procfile.types().iter().map(ToString::to_string).collect();
        assert_eq!(types, ["web", "worker"]);
        assert_eq!(procfile.argv("worker").unwrap(), ["/app/worker", "--queue", "de fault"]);
        assert_eq!(procfile.release().unwrap(), ["/app/migrate"]);
        assert!(procfile.declares(&ProcessType::parse("worker").unwrap()));
        assert!(!procfile.declares(&ProcessType::parse("release").unwrap()));
        let worker_only = Procfile::parse("worker: run").unwrap();
        assert_eq!(worker_only.argv("web"), None, "web runs the image's command");
        assert_eq!(worker_only.types()[0].as_str(), "web");
    }

    #[test]
    fn malformed_procfiles_name_their_line() {
        let cases = [
            ("web: ok\nnothing here\n", ProcfileError::NoColon { line: 2 }),
            ("\n\nWeb: x", ProcfileError::BadType { line: 3, source: InvalidProcessType("Web".into()) }),
            ("web:   ", ProcfileError::NoCommand { line: 1, kind: ProcessType::web() }),
            ("web: a\nweb: b", ProcfileError::Twice { line: 2, kind: ProcessType::web() }),
            ("web: echo 'open", ProcfileError::Quotes { line: 1 }),
        ];
        for (text, expected) in cases {
            assert_eq!(Procfile::parse(text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn formations_default_to_one_web() {
        let procfile = Procfile::parse("web: a\nworker: b\nrelease: c").unwrap();
        let mut formation = Formation::default();
        let counts = |f: &Formation| f.of(&procfile).into_iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>();
        assert_eq!(counts(&formation), ["web=1", "worker=0"]);
        formation.set(ProcessType::parse("worker").unwrap(), 2);
        let mut declared = Formation::default();
        declared.set(ProcessType::web(), 3);
        declared.set(ProcessType::parse("worker").unwrap(), 1);
        assert_eq!(counts(&formation.over(&declared)), ["web=3", "worker=2"]);
        assert_eq!("web=4".parse::<Scale>().unwrap().count, 4);
        for bad in ["web", "web=-1", "web=101", "web=1e3", "Web=1", "=1"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
    }
}
