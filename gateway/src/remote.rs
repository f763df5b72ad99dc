//! The command router for SSH: parses the command string a client sent
//! (without any shell) into the same clap tree as the local CLI, and runs it.
//! `nap serve` (the russh gateway) and `nap ssh-command` (OpenSSH's forced
//! command) both come through here.

use std::sync::Arc;

use clap::Parser;

use crate::caller::Caller;
use crate::commands::{self, Operate, OutputArgs};
use crate::context::{Context, Io};

#[derive(Debug, Parser)]
#[command(
    name = "ssh HOST",
    no_binary_name = true,
    disable_version_flag = true,
    about = "nap: git push to deploy, ssh to operate",
    after_help = "Deploy with: git remote add nap ssh://nap@HOST:2222/APP && git push nap master"
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
    #[error("malformed command: unbalanced quotes or a stray backslash")]
    Quoting,
    /// clap's refusal, shown as its first line.
    #[error("{}; run 'help' for the list of commands", first_line(&.0.render().to_string()))]
    Usage(Box<clap::Error>),
}

pub fn parse(command_line: &str) -> Result<Parsed, ParseError> {
    let words = shlex::split(command_line).ok_or(ParseError::Quoting)?;
    if words.is_empty() {
        return Ok(Parsed::Help(help_text()));
    }
    match RemoteCli::try_parse_from(&words) {
        Ok(cli) => Ok(Parsed::Run(cli.command, cli.output)),
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                Ok(Parsed::Help(err.render().to_string()))
            }
            _ => Err(ParseError::Usage(Box::new(err))),
        },
    }
}

/// Parses and runs `command_line` for `caller`; answers the exit status.
pub async fn route(ctx: &Arc<Context>, caller: &Caller, command_line: &str, mut io: Io) -> u32 {
    match parse(command_line) {
        Ok(Parsed::Run(command, output)) => commands::execute(ctx, caller, command, output, io).await,
        Ok(Parsed::Help(text)) => {
            use tokio::io::AsyncWriteExt;
            let _ = io.stdout.write_all(text.as_bytes()).await;
            let _ = io.stdout.flush().await;
            0
        }
        Err(err) => {
            tracing::info!(caller = caller.name(), command = command_line, error = %err, "refused command");
            commands::fail(&mut io.stderr, &err.to_string()).await
        }
    }
}

fn help_text() -> String {
    use clap::CommandFactory;
    RemoteCli::command().render_help().to_string()
}

/// clap's first line, without its "error: " prefix: errors here are one line.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or("invalid command");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(line: &str) -> Operate {
        match parse(line) {
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
        assert!(matches!(parse("--json apps"), Ok(Parsed::Run(Operate::Apps(_), OutputArgs { json: true }))));
        assert!(matches!(parse("apps --json"), Ok(Parsed::Run(Operate::Apps(_), OutputArgs { json: true }))));
        assert!(matches!(parse(""), Ok(Parsed::Help(_))));
        assert!(matches!(parse("help"), Ok(Parsed::Help(_))));
    }

    #[test]
    fn refuses_malformed_lines_with_one_line() {
        for line in
            ["rm -rf /", "git-receive-pack 'hel'lo'", "git-receive-pack hello extra", "git-receive-pack", "logs"]
        {
            let err = parse(line).expect_err(line).to_string();
            assert!(!err.contains('\n'), "{line}: {err}");
        }
        assert!(matches!(parse("git-receive-pack 'hel'lo'"), Err(ParseError::Quoting)));
    }
}
