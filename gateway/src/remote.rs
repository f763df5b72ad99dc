//! The command router for SSH: parses the command string a client sent
//! (without any shell) into the same clap tree as the local CLI, and runs it.
//! `nap serve` (the russh gateway) and `nap ssh-command` (OpenSSH's forced
//! command) both come through here.

use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::caller::Caller;
use crate::commands::{self, Operate, OutputArgs};
use crate::context::{Context, Io};

#[derive(Debug, Parser)]
#[command(
    name = "ssh HOST",
    no_binary_name = true,
    disable_version_flag = true,
    about = "nap: git push to deploy, ssh to operate"
)]
struct RemoteCli {
    #[command(flatten)]
    output: OutputArgs,
    #[command(subcommand)]
    command: Operate,
}

/// A parsed remote command.
#[derive(Debug)]
pub enum Parsed {
    Run(Operate, OutputArgs),
    /// `help`, `--help`, or no command at all: the text to print.
    Help(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed command: it is not UTF-8 text")]
    NotText,
    #[error("malformed command: unbalanced quotes or a stray backslash")]
    Quoting,
    /// clap's refusal, in one line with the verb's usage.
    #[error("{}", crate::usage::one_line(.0, "ssh HOST"))]
    Usage(Box<clap::Error>),
}

/// A command line as a client sent it, as text: refused unless it is
/// UTF-8, so that no config value is changed on its way in.
pub fn command_text(sent: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(sent).map_err(|_| ParseError::NotText)
}

/// Parses `command_line`; `remote` (`ssh://USER@HOST:PORT`) is where the
/// help says to push.
pub fn parse(command_line: &str, remote: &str) -> Result<Parsed, ParseError> {
    let words = shlex::split(command_line).ok_or(ParseError::Quoting)?;
    if words.is_empty() {
        return Ok(Parsed::Help(remote_cli(remote).render_help().to_string()));
    }
    let parsed =
        remote_cli(remote).try_get_matches_from(&words).and_then(|matches| RemoteCli::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => Ok(Parsed::Run(cli.command, cli.output)),
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                Ok(Parsed::Help(err.render().to_string()))
            }
            _ => Err(ParseError::Usage(Box::new(err))),
        },
    }
}

impl Parsed {
    /// Whether running it reads standard input.
    pub fn reads_input(&self) -> bool {
        match self {
            Parsed::Run(command, _) => command.reads_input(),
            Parsed::Help(_) => false,
        }
    }
}

/// Parses and runs `command_line` for `caller`; answers the exit status.
pub async fn route(ctx: &Arc<Context>, caller: &Caller, command_line: &str, io: Io) -> u32 {
    run(ctx, caller, parse(command_line, &ctx.settings.git_remote()), command_line, io).await
}

/// Runs `parsed` (`command_line`, parsed) for `caller`; answers the exit status.
pub async fn run(
    ctx: &Arc<Context>,
    caller: &Caller,
    parsed: Result<Parsed, ParseError>,
    command_line: &str,
    mut io: Io,
) -> u32 {
    match parsed {
        Ok(Parsed::Run(command, output)) => Box::pin(commands::execute(ctx, caller, command, output, io)).await,
        Ok(Parsed::Help(text)) => {
            use tokio::io::AsyncWriteExt;
            let _ = io.stdout.write_all(text.as_bytes()).await;
            let _ = io.stdout.flush().await;
            0
        }
        Err(err) => {
            tracing::info!(caller = caller.name(), command = %shown(command_line), error = %err, "refused command");
            commands::fail(&mut io.stderr, &err.to_string()).await
        }
    }
}

/// A command line as logs may show it: every `KEY=VALUE` word's value
/// masked (`config set hello TOKEN=***`), since values are config secrets,
/// and every word after the first of them, which may be the rest of a
/// value split at an unquoted space (`PW=a b`). `placement`'s constraints
/// (`node.labels.zone==a`) are no secret, and are shown whole.
pub fn shown(command_line: &str) -> String {
    let Some(words) = shlex::split(command_line) else { return "(a malformed command)".to_owned() };
    let placement = words.first().is_some_and(|verb| verb == "placement");
    let mut values = false;
    let masked: Vec<String> = words
        .iter()
        .map(|word| match word.split_once('=') {
            _ if placement && (word.contains("==") || word.contains("!=")) => word.clone(),
            Some((key, _)) => {
                values = true;
                format!("{key}=***")
            }
            None if values => "***".to_owned(),
            None => word.clone(),
        })
        .collect();
    shlex::try_join(masked.iter().map(String::as_str)).unwrap_or_else(|_| "(a command)".to_owned())
}

/// The commands, with where to push in their help.
fn remote_cli(remote: &str) -> clap::Command {
    RemoteCli::command().after_help(format!("Deploy with: git remote add nap {remote}/APP && git push nap master"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMOTE: &str = "ssh://nap@host:2222";

    fn parses(line: &str) -> Operate {
        match parse(line, REMOTE) {
            Ok(Parsed::Run(command, _)) => command,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn routes_every_form_git_sends_and_the_verbs() {
        for line in ["git-receive-pack 'hello'", "git-receive-pack '/hello'", "git-receive-pack 'hello.git'"] {
            assert!(matches!(parses(line), Operate::GitReceivePack { .. }), "{line}");
        }
        assert!(matches!(parses("git-upload-pack '/hello.git'"), Operate::GitUploadPack { .. }));
        assert!(matches!(parses("version"), Operate::Version));
        assert!(matches!(parses("config set hello A=1 B=2 --no-restart"), Operate::Config(_)));
        assert!(matches!(parses("logs hello --tail 5 --follow"), Operate::Logs { tail: Some(5), follow: true, .. }));
        assert!(matches!(parse("--json apps", REMOTE), Ok(Parsed::Run(Operate::Apps(_), OutputArgs { json: true }))));
        assert!(matches!(parse("apps --json", REMOTE), Ok(Parsed::Run(Operate::Apps(_), OutputArgs { json: true }))));
        assert!(matches!(parse("", REMOTE), Ok(Parsed::Help(_))));
        assert!(matches!(parse("help", REMOTE), Ok(Parsed::Help(_))));
    }

    #[test]
    fn refuses_malformed_lines_with_one_line() {
        for line in
            ["rm -rf /", "git-receive-pack 'hel'lo'", "git-receive-pack hello extra", "git-receive-pack", "logs"]
        {
            let err = parse(line, REMOTE).expect_err(line).to_string();
            assert!(!err.contains('\n'), "{line}: {err}");
        }
        assert!(matches!(parse("git-receive-pack 'hel'lo'", REMOTE), Err(ParseError::Quoting)));
    }

    #[test]
    fn logs_show_no_config_value() {
        assert_eq!(
            shown("config set hello 'TOKEN=s3cret value' B=2 --no-restart"),
            "config set hello 'TOKEN=***' 'B=***' '***'"
        );
        assert_eq!(
            shown("config set hello PW=x other-part-SECRET --no-restart"),
            "config set hello 'PW=***' '***' '***'"
        );
        assert_eq!(shown("git-receive-pack 'hello'"), "git-receive-pack hello");
        assert_eq!(shown("config set 'hel"), "(a malformed command)");
        assert_eq!(
            shown("placement shop node.labels.zone==a node.role!=manager TOKEN=x"),
            "placement shop 'node.labels.zone==a' 'node.role!=manager' 'TOKEN=***'"
        );
    }

    #[test]
    fn a_missing_argument_is_named_and_help_names_the_remote() {
        for (line, said) in [
            ("releases", "releases needs APP; usage: releases <APP>"),
            ("config set hello", "config set needs KEY=VALUE; usage: config set <APP> <KEY=VALUE>..."),
            ("apps destroy", "apps destroy needs APP; usage: apps destroy <APP>"),
        ] {
            assert_eq!(parse(line, REMOTE).expect_err(line).to_string(), said);
        }
        let Ok(Parsed::Help(help)) = parse("help", REMOTE) else { panic!("help") };
        assert!(help.contains("git remote add nap ssh://nap@host:2222/APP"), "{help}");
    }
}
