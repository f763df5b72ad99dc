//! A config value is a secret: it reaches the app, and no log line and no
//! `--json` output but `config APP --reveal`'s.

use std::os::unix::fs::PermissionsExt;

use nap_tests::{AppKind, AppRepo, Gateway, Run, unique};

#[test]
fn a_planted_secret_is_in_no_log_and_no_json() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("secret");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let secret = format!("planted-{}", unique("s"));
    let pair = format!("TOKEN={secret}");

    let mut outputs: Vec<(String, Run)> = Vec::new();
    let mut ssh = |args: &[&str]| {
        let run = gateway.ssh(&admin, "nap", args);
        run.assert_ok();
        outputs.push((args.join(" "), run));
    };
    ssh(&["config", "set", &app, &pair, "--json"]);
    ssh(&["config", "set", &app, "STAGED=x", "--no-restart", "--json"]);
    ssh(&["releases", &app, "--json"]);
    ssh(&["releases", &app]);
    ssh(&["config", &app, "--json"]);
    ssh(&["rollback", &app, "--json"]);
    ssh(&["rollback", &app, "v2", "--json"]);
    // A refused command line is logged too; its value must not be.
    let refused = gateway.ssh(&admin, "nap", &["config", "sett", &app, &pair]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    outputs.push(("a refused command".to_owned(), refused));
    for (command, run) in &outputs {
        assert!(!run.stdout.contains(&secret) && !run.stderr.contains(&secret), "{command} showed the secret: {run:?}");
    }
    let releases: serde_json::Value = serde_json::from_str(&outputs[2].1.stdout).expect("json");
    assert_eq!(releases[0]["config"]["TOKEN"], "********", "{releases}");

    // Only --reveal shows it.
    let revealed = gateway.ssh(&admin, "nap", &["config", &app, "--reveal"]);
    assert!(revealed.stdout.contains(&pair), "{revealed:?}");

    let log = gateway.log();
    assert!(log.contains("config set") && log.contains("TOKEN=***"), "the log names the command:\n{log}");
    assert!(!log.contains(&secret), "the serve log has the secret:\n{log}");
    let hook_log = gateway.data_dir().join("logs/nap.log");
    if let Ok(text) = std::fs::read_to_string(&hook_log) {
        assert!(!text.contains(&secret), "{} has the secret", hook_log.display());
        let mode = std::fs::metadata(&hook_log).expect("hook log").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is readable by others: {mode:o}", hook_log.display());
    }
}
