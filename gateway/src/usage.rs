//! Refusals as one line, the same over SSH and on the host: clap's
//! (`releases needs APP; usage: releases [--json] <APP>`), and any message
//! that carries what a client sent ([`flat`]).

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The refusal in one line, without clap's `error: ` prefix, with the
/// verb's usage where clap knows it. `program` is what the usage starts
/// with (`nap`, `ssh HOST`) and is left out.
pub fn one_line(err: &clap::Error, program: &str) -> String {
    let usage = err.get(ContextKind::Usage).map(|usage| usage_line(&usage.to_string(), program));
    let missing = match (err.kind(), err.get(ContextKind::InvalidArg)) {
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(args))) => Some(
            args.iter()
                .map(|arg| arg.trim_end_matches("...").trim_start_matches('<').trim_end_matches('>'))
                .collect::<Vec<_>>()
                .join(" and "),
        ),
        _ => None,
    };
    match (missing, usage) {
        (Some(missing), Some(usage)) => {
            let verb: Vec<&str> = usage.split(' ').take_while(|word| !word.starts_with(['[', '<', '-'])).collect();
            format!("{} needs {missing}; usage: {usage}", verb.join(" "))
        }
        (None, Some(usage)) => format!("{}; usage: {usage}", first_line(&err.render().to_string())),
        (_, None) => format!("{}; run 'help' for the list of commands", first_line(&err.render().to_string())),
    }
}

/// `text` as one line a terminal shows as it is: runs of whitespace become
/// one space, and other control characters (an escape sequence a client
/// planted) are written escaped.
pub fn flat(text: &str) -> String {
    let mut flat = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !flat.is_empty() {
            flat.push(' ');
        }
        for c in word.chars() {
            if c.is_control() {
                flat.extend(c.escape_default());
            } else {
                flat.push(c);
            }
        }
    }
    flat
}

/// clap's first line, without its "error: " prefix.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or("invalid command");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `Usage: PROGRAM verb [OPTIONS] <APP>` as `verb [OPTIONS] <APP>`: its
/// first form, one line.
fn usage_line(usage: &str, program: &str) -> String {
    let line = usage.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    let line = line.strip_prefix("Usage:").unwrap_or(line).trim_start();
    line.strip_prefix(program).unwrap_or(line).trim_start().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_flat_message_is_one_line_a_terminal_shows_as_it_is() {
        assert_eq!(flat("unknown field `-08 en\r\r?#\n  -`, expected"), "unknown field `-08 en ?# -`, expected");
        assert_eq!(flat("a\u{1b}[31mred"), "a\\u{1b}[31mred");
    }

    #[derive(Debug, Parser)]
    #[command(name = "nap")]
    struct Cli {
        #[command(subcommand)]
        command: Verb,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Verb {
        Releases {
            app: String,
            #[arg(long)]
            json: bool,
        },
    }

    fn refusal(words: &[&str]) -> String {
        match Cli::try_parse_from(words) {
            Ok(cli) => panic!("{words:?} parsed: {cli:?}"),
            Err(err) => one_line(&err, "nap"),
        }
    }

    #[test]
    fn a_missing_argument_is_named_with_the_verbs_usage() {
        assert_eq!(refusal(&["nap", "releases"]), "releases needs APP; usage: releases <APP>");
    }

    #[test]
    fn other_refusals_keep_clap_s_first_line() {
        let line = refusal(&["nap", "releases", "hello", "--jsn"]);
        assert!(line.starts_with("unexpected argument '--jsn' found; usage: releases"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
