//! nap's interface as snapshots (insta): the `--help` of every command and
//! subcommand, and the `--json` answers of the operate commands on a real
//! gateway with a pushed app. A change to either shows in review as a diff
//! of `tests/tests/snapshots/`.
//!
//! What varies from run to run is redacted: app names (`[app]`), times,
//! ports, commit hashes, key fingerprints, uptimes and nap's version.
//!
//! To accept a changed interface, run the tests with `INSTA_UPDATE=always`
//! and review the diff of the snapshots before committing it:
//!
//! ```text
//! INSTA_UPDATE=always cargo nextest run -p nap-tests --test interface
//! git diff tests/tests/snapshots/
//! ```
//!
//! (`cargo insta test -p nap-tests --test interface` then `cargo insta
//! review` does the same where cargo-insta is installed.) Without it, a
//! mismatch fails the test and leaves `*.snap.new` files beside the
//! snapshots (not under CI, where `CI` is set); delete them once dealt with.
//! A command that is gone leaves its snapshot behind: delete that file too.

use std::process::Command;

use nap_tests::{AppKind, AppRepo, Gateway, Run, nap_bin, unique};

/// Runs the local `nap ARGS --help` as a user with no NAP_* variables set
/// would (clap shows a set variable's value in the help).
fn local_help(path: &[String]) -> Run {
    let mut command = Command::new(nap_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NAP_") {
            command.env_remove(name);
        }
    }
    command.args(path).arg("--help").output().expect("run nap").into()
}

/// The subcommands a help text lists under `Commands:`, but `help`.
fn subcommands(help: &str) -> Vec<String> {
    let listed = help.lines().skip_while(|line| *line != "Commands:").skip(1);
    listed
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// insta settings that hide nap's version, which a release changes.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&format!(r"\b{}\b", regex_text(env!("CARGO_PKG_VERSION"))), "[version]");
    settings
}

/// `text` as a regex that matches it literally.
fn regex_text(text: &str) -> String {
    text.chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { vec![c] } else { vec!['\\', c] })
        .collect()
}

#[test]
fn the_help_of_every_command_is_as_reviewed() {
    let settings = settings();
    let mut commands = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        commands.push(format!("nap {}", path.join(" ")).trim_end().to_owned());
        let run = local_help(&path);
        let help = run.assert_ok().stdout.clone();
        for sub in subcommands(&help).into_iter().rev() {
            pending.push([path.clone(), vec![sub]].concat());
        }
        let name = if path.is_empty() { "help".to_owned() } else { format!("help-{}", path.join("-")) };
        settings.bind(|| insta::assert_snapshot!(name, help));
    }
    // A command added or removed shows here, beside its own help.
    settings.bind(|| insta::assert_snapshot!("commands", commands.join("\n")));
}

#[test]
fn the_json_of_the_operate_commands_is_as_reviewed() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("iface");
    // Sorts after the app, whatever the random part.
    let created = format!("{app}-created");
    gateway.user_for("dev", &[&app, &created]);
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();

    let mut settings = settings();
    settings.add_filter(&regex_text(&app), "[app]");
    // Each instance's own address on its app's network (app_subnets).
    settings.add_filter(r"\b10\.(11[2-9]|12[0-7])\.\d+\.\d+\b", "[ip]");
    for (selector, replacement) in [
        (".**.created_at", "[time]"),
        (".**.added_at", "[time]"),
        (".**.commit", "[commit]"),
        (".**.uptime_seconds", "[uptime]"),
        (".**.fingerprint", "[fingerprint]"),
        (".**.public_key", "[public key]"),
    ] {
        settings.add_redaction(selector, replacement);
    }
    let json = |name: &str, args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--json");
        let run = gateway.ssh(&admin, "nap", &args);
        run.assert_ok();
        let value: serde_json::Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?} is not JSON ({e}): {}", run.stdout));
        settings.bind(|| insta::assert_json_snapshot!(format!("json-{name}"), value));
    };
    // Each kind of release first, so that `releases` lists them all.
    json("config-set", &["config", "set", &app, "GREETING=hello"]);
    json("rollback", &["rollback", &app, "v1"]);
    json("restart", &["restart", &app]);
    json("releases", &["releases", &app]);
    json("ps", &["ps", &app]);
    json("config", &["config", &app]);
    json("config-reveal", &["config", &app, "--reveal"]);
    json("apps-create", &["apps", "create", &created]);
    json("apps", &["apps"]);
    json("keys-list", &["keys", "list"]);
    json("version", &["version"]);
}
