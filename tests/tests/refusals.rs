//! Bad input gets one clear line and a non-zero exit, and changes nothing.

use nap_tests::{AppKind, AppRepo, Gateway, Key, Run, unique};

#[test]
fn malformed_commands_get_one_line_and_a_non_zero_exit() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "error: unrecognized subcommand 'frobnicate'"),
        (&["git-receive-pack", "'../x'"], "error: invalid app name \"../x\""),
        (&["git-receive-pack", "'a;rm -rf /'"], "error: invalid app name \"a;rm -rf /\""),
        (&["git-receive-pack", "''"], "error: invalid app name \"\""),
        (&["git-receive-pack", "'Hello'"], "error: invalid app name \"Hello\""),
        (&["git-receive-pack", "'hel'lo'"], "error: malformed command: unbalanced quotes"),
        (&["git-receive-pack", "'\"hello\"'"], "error: invalid app name \"\\\"hello\\\"\""),
        (&["git-upload-pack", "'nosuchapp'"], "error: app nosuchapp does not exist"),
        (&["rm", "-rf", "/"], "error: unrecognized subcommand 'rm'"),
        (&["releases"], "error: releases needs APP; usage: releases <APP>"),
        (&["logs"], "error: logs needs APP; usage: logs <APP>"),
        (&["config", "set", "hello"], "error: config set needs KEY=VALUE; usage: config set <APP> <KEY=VALUE>..."),
        (&["apps", "destroy"], "error: apps destroy needs APP; usage: apps destroy <APP>"),
    ];
    for (command, expected) in cases {
        let run = gateway.ssh(&alice, "iwanna", command);
        assert_eq!(run.code, Some(1), "{command:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{command:?}: expected {expected:?}, got {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{command:?}: not one line: {:?}", run.stderr);
    }
    // Nothing was created by any of them.
    let repos = gateway.data_dir().join("repos");
    let made: Vec<_> =
        std::fs::read_dir(&repos).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
}

#[test]
fn a_missing_argument_on_the_host_is_one_line_and_exit_1() {
    let gateway = Gateway::start();
    for (args, expected) in [
        (&["releases"][..], "error: releases needs APP; usage: releases <APP>"),
        (&["keys", "grant", "bob"], "error: keys grant needs APP; usage: keys grant <NAME> <APP>..."),
        (&["keys", "update", "bob"], "error: keys update needs --admin|--no-admin|--apps"),
    ] {
        let run = gateway.nap(args, "");
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{args:?}: expected {expected:?}, got {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{args:?}: {:?}", run.stderr);
    }
}

#[test]
fn hints_name_the_real_host_and_port() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("hinted");
    let remote = format!("ssh://nap@127.0.0.1:{}", gateway.port);
    let created = gateway.ssh(&alice, "nap", &["apps", "create", &app]);
    created.assert_ok();
    assert!(created.stdout.contains(&format!("git push {remote}/{app} master")), "{created:?}");
    let help = gateway.ssh(&alice, "nap", &["help"]);
    assert!(help.stdout.contains(&format!("git remote add nap {remote}/APP")), "{}", help.stdout);
    gateway.ssh(&alice, "nap", &["apps", "destroy", &app, "--force"]).assert_ok();
}

#[test]
fn help_and_version_answer() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let help = gateway.ssh(&alice, "git", &["help"]);
    help.assert_ok();
    assert!(help.stdout.contains("git-receive-pack"), "{}", help.stdout);
    let bare = gateway.ssh(&alice, "git", &[]);
    assert!(bare.stdout.contains("git-receive-pack"), "{bare:?}");
    let version = gateway.ssh(&alice, "nap", &["version"]);
    version.assert_ok();
    assert!(version.stdout.starts_with("nap "), "{}", version.stdout);
}

#[test]
fn an_unknown_key_is_refused_at_the_offer() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let stranger = Key::generate();

    let verbose = |key: &Key| {
        let run: Run = std::process::Command::new("ssh")
            .args(["-v", "-i"])
            .arg(&key.private)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-p", &gateway.port.to_string(), "nap@127.0.0.1", "version"])
            .output()
            .expect("ssh")
            .into();
        run
    };
    // OpenSSH says "Server accepts key" when the offer (before any signature) is accepted.
    let known = verbose(&alice);
    known.assert_ok();
    assert!(known.stderr.contains("Server accepts key"), "{}", known.stderr);
    let unknown = verbose(&stranger);
    assert_eq!(unknown.code, Some(255));
    assert!(unknown.stderr.contains("Permission denied (publickey)"), "{}", unknown.stderr);
    assert!(!unknown.stderr.contains("Server accepts key"), "the offer was accepted:\n{}", unknown.stderr);

    // And a push with it changes nothing.
    let app = unique("stranger");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &stranger, &app, "master").assert_failed_with("Permission denied (publickey)");
    assert!(!gateway.repo_path(&app).exists());
}

#[test]
fn keys_are_managed_locally_with_clear_errors() {
    let gateway = Gateway::start();
    let key = Key::generate();
    let added = gateway.nap(&["keys", "add", "alice", "--admin"], &key.public_text());
    added.assert_ok();
    assert!(added.stdout.contains("added key alice (SHA256:") && added.stdout.contains("as admin"), "{added:?}");

    let list = gateway.nap(&["keys", "list", "--json"], "");
    list.assert_ok();
    let keys: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    assert_eq!(keys[0]["name"], "alice");
    assert_eq!(keys[0]["admin"], true);
    let text = gateway.nap(&["keys", "list"], "").assert_ok().stdout.clone();
    let rows: Vec<Vec<&str>> = text.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "FINGERPRINT", "MAY", "USE"], "{text}");
    assert!(rows[1][0] == "alice" && rows[1][1].starts_with("SHA256:") && rows[1][2] == "admin", "{text}");

    let cases: &[(&[&str], String, &str)] = &[
        (&["keys", "add", "bob"], "ssh-ed25519 not-base64 x\n".into(), "error: not an OpenSSH public key"),
        (&["keys", "add", "bob"], String::new(), "error: no public key on standard input"),
        (&["keys", "add", "alice"], Key::generate().public_text(), "error: a key named \"alice\" already exists"),
        (
            &["keys", "add", "bob"],
            key.public_text(),
            "error: this key is already added as \"alice\"; change what it may do with: keys update alice --admin, or: keys grant alice APP",
        ),
        (&["keys", "add", "bob;x"], Key::generate().public_text(), "error: invalid key name \"bob;x\""),
        (&["keys", "remove", "carol"], String::new(), "error: no key named \"carol\""),
        (&["keys", "grant", "carol", "shop"], String::new(), "error: no key named \"carol\""),
        (&["keys", "grant", "alice", "Shop"], String::new(), "error: invalid app name \"Shop\""),
        (&["keys", "update", "alice", "--no-admin"], String::new(), "error: \"alice\" is the only admin key"),
        (&["keys", "remove", "alice"], String::new(), "error: \"alice\" is the only admin key"),
        (&["keys", "add", "--", "--help"], Key::generate().public_text(), "error: invalid key name \"--help\""),
        (&["keys", "add", "--", "-x"], Key::generate().public_text(), "error: invalid key name \"-x\""),
    ];
    for (args, stdin, expected) in cases {
        let run = gateway.nap(args, stdin);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{args:?}: expected {expected:?}, got {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{args:?}: {:?}", run.stderr);
    }

    // A removed key is refused from then on: once the gateway's watch of
    // the keys brings the change from this other process (at once, when
    // the change is made over SSH).
    assert!(gateway.ssh(&key, "nap", &["version"]).ok());
    gateway.nap(&["keys", "add", "root", "--admin"], &Key::generate().public_text()).assert_ok();
    gateway.nap(&["keys", "remove", "alice"], "").assert_ok();
    let refused = eventually(|| gateway.ssh(&key, "nap", &["version"]), |run| run.code == Some(255));
    assert_eq!(refused.code, Some(255), "{refused:?}");
}

#[test]
fn the_acl_verbs_change_what_a_key_may_use_and_the_suggested_fix_works() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("acl");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let dev = gateway.user_for("dev", &[]);

    // The refusal names a command; run as printed, it lets the key in.
    let refused = gateway.ssh(&dev, "nap", &["releases", &app]);
    let fix = format!("keys grant dev {app}");
    refused.assert_failed_with(&format!("an admin can allow it with: {fix}"));
    let words: Vec<&str> = fix.split(' ').collect();
    let granted = gateway.ssh(&admin, "nap", &words);
    granted.assert_ok();
    assert!(granted.stdout.contains(&format!("key dev may use apps {app}")), "{granted:?}");
    gateway.ssh(&dev, "nap", &["releases", &app]).assert_ok();

    // revoke takes it away again; update replaces the list or makes an admin.
    gateway.ssh(&admin, "nap", &["keys", "revoke", "dev", &app]).assert_ok();
    gateway.ssh(&dev, "nap", &["releases", &app]).assert_failed_with("may not use app");
    gateway.nap(&["keys", "update", "dev", "--apps", &format!("{app},other")], "").assert_ok();
    eventually(|| gateway.ssh(&dev, "nap", &["releases", &app]), Run::ok).assert_ok();
    let list = gateway.nap(&["keys", "list", "--json"], "");
    let keys: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    let dev_key = keys.as_array().and_then(|keys| keys.iter().find(|k| k["name"] == "dev")).expect("dev");
    assert_eq!(dev_key["apps"], serde_json::json!([app, "other"]));
    gateway.ssh(&dev, "nap", &["keys"]).assert_failed_with("only admin keys may manage keys");
    gateway.nap(&["keys", "update", "dev", "--admin"], "").assert_ok();
    eventually(|| gateway.ssh(&dev, "nap", &["keys"]), Run::ok).assert_ok();
    // Now two admins: either may stop being one.
    gateway.nap(&["keys", "update", "admin", "--no-admin", "--apps", ""], "").assert_ok();
    eventually(|| gateway.ssh(&admin, "nap", &["keys"]), |run| !run.ok())
        .assert_failed_with("only admin keys may manage keys");
}

#[test]
fn sftp_is_refused_at_once_and_a_clients_environment_is_ignored() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let started = std::time::Instant::now();
    let sftp: Run = std::process::Command::new("timeout")
        .args(["20", "sftp", "-b", "-", "-P", &gateway.port.to_string()])
        .args(nap_tests::ssh_options(&alice.private))
        .arg("nap@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sftp")
        .into();
    assert!(!sftp.ok() && sftp.code != Some(124), "sftp was not refused: {sftp:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "sftp took {:?}", started.elapsed());

    let with_env: Run = std::process::Command::new("ssh")
        .args(nap_tests::ssh_options(&alice.private))
        .args([
            "-o",
            "SetEnv=NAP_STORE=etcd://127.0.0.1:1",
            "-p",
            &gateway.port.to_string(),
            "nap@127.0.0.1",
            "version",
        ])
        .output()
        .expect("ssh")
        .into();
    with_env.assert_ok();
    assert!(with_env.stdout.starts_with("nap "), "{with_env:?}");
}

/// `attempt` again until `done` says so, for 10 s at most: a key changed by
/// `nap` on the host reaches the gateway through its watch of the store.
fn eventually(attempt: impl Fn() -> Run, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let run = attempt();
        if done(&run) || std::time::Instant::now() >= deadline {
            return run;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
