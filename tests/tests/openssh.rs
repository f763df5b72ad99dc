//! nap behind OpenSSH: `nap keys authorized-keys` lines in a real sshd take
//! the same pushes and commands as `nap serve`.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, Key, Sshd, ssh_options, unique, wait_for_body};

#[test]
fn a_forced_command_takes_the_same_push() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let lines = gateway.nap(&["keys", "authorized-keys"], "");
    lines.assert_ok();
    let line = lines.stdout.lines().next().expect("one line per key").to_owned();
    assert!(
        line.starts_with("command=\"") && line.contains(" ssh-command --key alice\",restrict ssh-ed25519 "),
        "{line}"
    );
    let sshd = Sshd::start(&lines.stdout);

    let app = unique("openssh");
    let repo = AppRepo::new(AppKind::Web);
    let push = repo.push_to(&alice, &sshd.remote(&app), "master");
    push.assert_ok();
    assert!(push.stderr.contains("remote: -----> Deploying"), "{}", push.stderr);
    assert!(push.stderr.contains("(pushed by alice)"), "{}", push.stderr);
    assert!(wait_for_body(&push.url().expect("url"), "hello from web", Duration::from_secs(10)));
    assert_eq!(gateway.branch_sha(&app, "master"), Some(repo.head()));

    // Bad input is refused the same way.
    let bad: nap_tests::Run = std::process::Command::new("ssh")
        .args(ssh_options(&alice.private))
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "git-receive-pack", "'../x'"])
        .output()
        .expect("ssh")
        .into();
    assert_eq!(bad.code, Some(1), "{bad:?}\n{}", sshd.log());
    assert!(bad.stderr.starts_with("error: invalid app name \"../x\""), "{bad:?}");

    // A key that is not in authorized_keys gets nowhere.
    let stranger = Key::generate();
    repo.push_to(&stranger, &sshd.remote(&app), "master").assert_failed_with("Permission denied");
}
