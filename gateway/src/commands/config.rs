//! `config APP`, `config set APP K=V ...`, `config unset APP K ...`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{AppChange, Changed, CommandError, MASK, Reply, existing_app};
use crate::app_name::AppName;
use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::deploy::{ConfigChange, LimitsChange};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ConfigArgs {
    /// The app whose environment to show
    #[arg(required = true)]
    app: Option<String>,
    /// Show values instead of masking them
    #[arg(long)]
    reveal: bool,
    #[command(subcommand)]
    command: Option<ConfigCommand>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Set variables; the app restarts as a new release
    Set {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Only store the change; it takes effect with the next release
        #[arg(long)]
        no_restart: bool,
    },
    /// Remove variables; the app restarts as a new release
    Unset {
        app: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Only store the change; it takes effect with the next release
        #[arg(long)]
        no_restart: bool,
    },
}

/// A config change nap cannot make.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} is not set for {app}")]
    NotSet { key: String, app: AppName },
    /// Which pair it was goes by position: the word may be part of a value
    /// split at a space, and errors are logged.
    #[error("malformed config pair (the {0} given): expected KEY=VALUE; quote a value that holds spaces")]
    Malformed(Ordinal),
    #[error("invalid config key {0:?}: use letters, digits and '_', not starting with a digit")]
    InvalidKey(String),
    #[error("the value of {0} must be one line")]
    MultiLine(String),
    #[error("PORT is set by nap from the Dockerfile's EXPOSE; it cannot be configured")]
    Port,
}

pub async fn run(ctx: &Context, caller: &Caller, args: ConfigArgs, io: &mut Io) -> Result<Reply, CommandError> {
    match args.command {
        Some(ConfigCommand::Set { app, pairs, no_restart }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let pairs = pairs.iter().enumerate().map(|(i, p)| parse_pair(i, p)).collect::<Result<Vec<_>, _>>()?;
            let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let change = format!("set {}", names.join(", "));
            let config = ConfigChange::Set(pairs);
            let change = AppChange { changed: Changed::Config, change, config, limits: LimitsChange::Keep, no_restart };
            super::change_app(ctx, caller, &app, change, io).await
        }
        Some(ConfigCommand::Unset { app, keys, no_restart }) => {
            let app = existing_app(ctx, caller, &app).await?;
            let config = ctx.store.config(app.as_str()).await?;
            if let Some(key) = keys.iter().find(|key| !config.contains_key(*key)) {
                return Err(ConfigError::NotSet { key: key.clone(), app }.into());
            }
            let change = format!("unset {}", keys.join(", "));
            let config = ConfigChange::Unset(keys);
            let change = AppChange { changed: Changed::Config, change, config, limits: LimitsChange::Keep, no_restart };
            super::change_app(ctx, caller, &app, change, io).await
        }
        None => {
            let app = existing_app(ctx, caller, args.app.as_deref().unwrap_or_default()).await?;
            let config = ctx.store.config(app.as_str()).await?;
            let shown: BTreeMap<&String, &str> =
                config.iter().map(|(k, v)| (k, if args.reveal { v.as_str() } else { MASK })).collect();
            let text = if shown.is_empty() {
                format!("{app} has no config; set some with: config set {app} KEY=VALUE")
            } else {
                shown.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
            };
            Ok(Reply::new(text, json!(shown)))
        }
    }
}

/// A position, as English says it: 1st, 2nd, 3rd, 4th.
#[derive(Debug, Clone, Copy)]
pub struct Ordinal(usize);

impl std::fmt::Display for Ordinal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let suffix = match (self.0 % 10, self.0 % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        write!(f, "{}{suffix}", self.0)
    }
}

/// `KEY=VALUE`, with a key an environment variable can have. `PORT` is nap's.
fn parse_pair(index: usize, pair: &str) -> Result<(String, String), ConfigError> {
    let malformed = || ConfigError::Malformed(Ordinal(index + 1));
    let (key, value) = pair.split_once('=').ok_or_else(malformed)?;
    let mut chars = key.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ConfigError::InvalidKey(key.to_owned()));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(ConfigError::MultiLine(key.to_owned()));
    }
    if key == "PORT" {
        return Err(ConfigError::Port);
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_pair;

    #[test]
    fn pairs_need_a_name_an_equals_sign_and_no_port() {
        assert_eq!(parse_pair(0, "GREETING=hi=there").unwrap(), ("GREETING".into(), "hi=there".into()));
        assert_eq!(parse_pair(0, "EMPTY=").unwrap(), ("EMPTY".into(), String::new()));
        for bad in ["NOEQUALS", "=x", "1A=x", "A-B=x", "PORT=1", "A=two\nlines"] {
            assert!(parse_pair(0, bad).is_err(), "{bad}");
        }
    }
}
