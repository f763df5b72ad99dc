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
    // A value split by an unquoted space: its second part shows nowhere.
    let split = gateway.ssh(&admin, "nap", &["config", "set", &app, "PW=x", &format!("other-part-{secret}")]);
    assert_eq!(split.code, Some(1), "{split:?}");
    assert!(split.stderr.contains("malformed config pair (the 2nd given)"), "{split:?}");
    outputs.push(("a value split by a space".to_owned(), split));
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
fn a_config_value_that_is_not_utf8_is_refused_not_changed() {
    use std::os::unix::ffi::OsStrExt;
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("bytes");
    gateway.ssh(&admin, "nap", &["apps", "create", &app]).assert_ok();
    let mut ssh = gateway.ssh_command(&admin, "nap", &["config", "set", &app]);
    ssh.arg(std::ffi::OsStr::from_bytes(b"BAD=\xffvalue"));
    let run: Run = ssh.output().expect("run ssh").into();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr.trim_end(), "error: malformed command: it is not UTF-8 text", "{run:?}");
    let config = gateway.ssh(&admin, "nap", &["config", &app, "--json"]);
    assert!(!config.assert_ok().stdout.contains("BAD"), "{config:?}");
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

/// Whether `needle` is anywhere in the files of the embedded store.
fn in_state_files(gateway: &Gateway, needle: &str) -> bool {
    ["state.db", "state.db-wal"].iter().any(|file| {
        let bytes = std::fs::read(gateway.data_dir().join(file)).unwrap_or_default();
        bytes.windows(needle.len()).any(|window| window == needle.as_bytes())
    })
}

/// Polls `done` for up to 15 s.
fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

#[test]
fn a_replaced_secret_leaves_the_stores_history_and_files() {
    let gateway = Gateway::builder().settings("history_retention = 1\n").start();
    let admin = gateway.user("admin");
    let app = unique("history");
    gateway.ssh(&admin, "nap", &["apps", "create", &app]).assert_ok();
    let old = format!("old-secret-{}", unique("s"));
    gateway.ssh(&admin, "nap", &["config", "set", &app, &format!("TOKEN={old}")]).assert_ok();
    assert!(in_state_files(&gateway, &old), "the secret was never written where this test looks");
    gateway.ssh(&admin, "nap", &["config", "set", &app, "TOKEN=new"]).assert_ok();
    assert!(eventually(|| !in_state_files(&gateway, &old)), "the replaced secret is still in the store's files");
}

#[test]
fn a_replaced_secret_leaves_etcds_history() {
    let etcd = nap_tests::PrivateEtcd::start();
    let gateway = Gateway::builder().settings(&format!("store = \"{}\"\nhistory_retention = 1\n", etcd.url())).start();
    let admin = gateway.user("admin");
    let app = unique("history");
    gateway.ssh(&admin, "nap", &["apps", "create", &app]).assert_ok();
    gateway.ssh(&admin, "nap", &["config", "set", &app, "TOKEN=old-secret"]).assert_ok();
    let key = format!("/nap/apps/{app}/config");
    let written = etcd.etcdctl(&["get", &key, "--write-out=json"]);
    let header: serde_json::Value = serde_json::from_str(&written.assert_ok().stdout).expect("JSON");
    let revision = header["kvs"][0]["mod_revision"].as_i64().expect("mod_revision").to_string();
    gateway.ssh(&admin, "nap", &["config", "set", &app, "TOKEN=new"]).assert_ok();
    let compacted = || {
        let old = etcd.etcdctl(&["get", &key, &format!("--rev={revision}")]);
        !old.ok() && old.stderr.contains("compacted")
    };
    assert!(eventually(compacted), "etcd still has the old value at revision {revision}");
}
