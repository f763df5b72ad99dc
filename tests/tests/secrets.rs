//! A config value is a secret: it reaches the app, and no log line and no
//! `--json` output but `config APP --reveal`'s; and what nap keeps on disk
//! is its owner's alone.

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

#[test]
fn what_nap_keeps_on_disk_is_its_owners_alone() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("private");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    gateway.ssh(&admin, "nap", &["config", "set", &app, "TOKEN=x"]).assert_ok();
    let data = gateway.data_dir();
    let mode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).ok();
    assert_eq!(mode(&data), Some(0o700), "the data directory");
    assert_eq!(mode(&data.join("state.db")).map(|m| m & 0o077), Some(0), "the store");
    // Everything under the repo, made by nap and by the git it ran.
    let mut shared = Vec::new();
    let mut dirs = vec![gateway.repo_path(&app)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if mode(&path).is_some_and(|m| m & 0o077 != 0) {
                shared.push(format!("{} {:o}", path.display(), mode(&path).unwrap_or_default()));
            }
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    assert!(shared.is_empty(), "readable by others: {shared:#?}");
}
