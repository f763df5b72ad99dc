//! Bad input gets one clear line and a non-zero exit, and changes nothing.

use nap_tests::{AppKind, AppRepo, Gateway, Key, unique};

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
        let run: nap_tests::Run = std::process::Command::new("ssh")
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

    let cases: &[(&[&str], String, &str)] = &[
        (&["keys", "add", "bob"], "ssh-ed25519 not-base64 x\n".into(), "error: not an OpenSSH public key"),
        (&["keys", "add", "bob"], String::new(), "error: no public key on standard input"),
        (&["keys", "add", "alice"], Key::generate().public_text(), "error: a key named \"alice\" already exists"),
        (&["keys", "add", "bob"], key.public_text(), "error: this key is already added as \"alice\""),
        (&["keys", "add", "bob;x"], Key::generate().public_text(), "error: invalid key name \"bob;x\""),
        (&["keys", "remove", "carol"], String::new(), "error: no key named \"carol\""),
    ];
    for (args, stdin, expected) in cases {
        let run = gateway.nap(args, stdin);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{args:?}: expected {expected:?}, got {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{args:?}: {:?}", run.stderr);
    }

    // A removed key is refused from then on.
    assert!(gateway.ssh(&key, "nap", &["version"]).ok());
    gateway.nap(&["keys", "remove", "alice"], "").assert_ok();
    let refused = gateway.ssh(&key, "nap", &["version"]);
    assert_eq!(refused.code, Some(255), "{refused:?}");
}
