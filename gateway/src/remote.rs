//! The command router: what a remote user may ask for, parsed from the SSH
//! command string without any shell.
//!
//! The same tree serves `nap serve` (the russh gateway) and
//! `nap ssh-command` (OpenSSH's forced command).

use clap::{Parser, Subcommand};

use crate::app_name::{AppName, InvalidAppName};

#[derive(Debug, Parser)]
#[command(
    name = "ssh HOST",
    no_binary_name = true,
    disable_version_flag = true,
    about = "nap: git push to deploy, ssh to operate",
    after_help = "Deploy with: git remote add nap ssh://nap@HOST:2222/APP && git push nap master"
)]
struct RemoteCli {
    #[command(subcommand)]
    command: Remote,
}

#[derive(Debug, Subcommand)]
enum Remote {
    /// Receive a push (run by `git push`)
    #[command(name = "git-receive-pack")]
    GitReceivePack { repo: String },
    /// Send the app's repo (run by `git clone` and `git fetch`)
    #[command(name = "git-upload-pack")]
    GitUploadPack { repo: String },
    /// Print nap's version
    Version,
}

/// A parsed, validated remote command.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteCommand {
    ReceivePack(AppName),
    UploadPack(AppName),
    Version,
    /// `help`, `--help`, or no command at all.
    Help(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed command: unbalanced quotes or a stray backslash")]
    Quoting,
    #[error("{0}; run 'help' for the list of commands")]
    Usage(String),
    #[error(transparent)]
    AppName(#[from] InvalidAppName),
}

pub fn parse(command_line: &str) -> Result<RemoteCommand, ParseError> {
    let words = shlex::split(command_line).ok_or(ParseError::Quoting)?;
    if words.is_empty() {
        return Ok(RemoteCommand::Help(help_text()));
    }
    let cli = match RemoteCli::try_parse_from(&words) {
        Ok(cli) => cli,
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Ok(RemoteCommand::Help(err.render().to_string()));
        }
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return Ok(RemoteCommand::Help(err.render().to_string()));
        }
        Err(err) => return Err(ParseError::Usage(first_line(&err.render().to_string()))),
    };
    Ok(match cli.command {
        Remote::GitReceivePack { repo } => RemoteCommand::ReceivePack(AppName::from_repo_path(&repo)?),
        Remote::GitUploadPack { repo } => RemoteCommand::UploadPack(AppName::from_repo_path(&repo)?),
        Remote::Version => RemoteCommand::Version,
    })
}

pub fn help_text() -> String {
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

    fn app(name: &str) -> AppName {
        AppName::parse(name).unwrap()
    }

    #[test]
    fn routes_git_commands_in_every_form_git_sends() {
        for line in ["git-receive-pack 'hello'", "git-receive-pack '/hello'", "git-receive-pack 'hello.git'"] {
            assert_eq!(parse(line), Ok(RemoteCommand::ReceivePack(app("hello"))), "{line}");
        }
        assert_eq!(parse("git-upload-pack '/hello.git'"), Ok(RemoteCommand::UploadPack(app("hello"))));
        assert_eq!(parse("version"), Ok(RemoteCommand::Version));
        assert!(matches!(parse(""), Ok(RemoteCommand::Help(_))));
        assert!(matches!(parse("help"), Ok(RemoteCommand::Help(_))));
    }

    #[test]
    fn refuses_anything_else_with_one_line() {
        for line in [
            "rm -rf /",
            "git-receive-pack '../x'",
            "git-receive-pack 'a;rm -rf /'",
            "git-receive-pack ''",
            "git-receive-pack 'Hello'",
            "git-receive-pack 'hel'lo'",
            "git-receive-pack hello extra",
            "git-receive-pack",
        ] {
            let err = parse(line).expect_err(line).to_string();
            assert!(!err.contains('\n'), "{line}: {err}");
        }
        assert_eq!(parse("git-receive-pack 'hel'lo'"), Err(ParseError::Quoting));
    }
}
