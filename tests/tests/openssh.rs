//! nap behind OpenSSH: `nap keys authorized-keys` lines in a real sshd take
//! the same pushes and commands as `nap serve`.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, Key, REGISTRY, Sshd, ssh_options, unique, wait_for_body};

#[test]
fn a_forced_command_takes_the_same_push() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let lines = gateway.nap(&["keys", "authorized-keys"], "");
    lines.assert_ok();
    let line = lines.stdout.lines().next().expect("one line per key").to_owned();
    assert!(
        line.starts_with("command=\"") && line.contains(" ssh-command --key=alice\",restrict,pty ssh-ed25519 "),
        "{line}"
    );
    let sshd = Sshd::start(&lines.stdout);

    let app = unique("openssh");
    let repo = AppRepo::new(AppKind::Web);
    let push = repo.push_to(&alice, &sshd.remote(&app), "master");
    push.assert_ok();
    assert!(push.stderr.contains("remote: -----> Deploying"), "{}", push.stderr);
    assert!(push.stderr.contains("(pushed by alice)"), "{}", push.stderr);
    // The forced command read the gateway's settings file: the same registry.
    assert!(push.stderr.contains(&format!("Building {REGISTRY}/{app}:v1")), "{}", push.stderr);
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

    // Hints name the remote of this SSH session: its user and port.
    let other = unique("openssh");
    let created: nap_tests::Run = std::process::Command::new("ssh")
        .args(ssh_options(&alice.private))
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "apps", "create", &other])
        .output()
        .expect("ssh")
        .into();
    created.assert_ok();
    let hint = format!("git push ssh://root@{}:{}/{other} master", "127.0.0.1", sshd.port);
    assert!(created.stdout.contains(&hint), "{created:?}");
    gateway.nap(&["apps", "destroy", &other, "--force"], "").assert_ok();

    // A key that is not in authorized_keys gets nowhere.
    let stranger = Key::generate();
    repo.push_to(&stranger, &sshd.remote(&app), "master").assert_failed_with("Permission denied");
}

#[test]
fn serve_says_which_flags_its_settings_file_lacks() {
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{REGISTRY}\"\n"))
        .env(&[("NAP_RETIRE_TIMEOUT", "7")])
        .start();
    let file = gateway.config_path().display().to_string();
    let said = format!("settings retire_timeout come from flags or NAP_* variables, not from {file}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gateway.log().contains(&said) {
        assert!(std::time::Instant::now() < deadline, "no warning of {said:?}:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The forced command is told to read that same file.
    gateway.user("alice");
    let lines = gateway.nap(&["keys", "authorized-keys"], "");
    assert!(lines.stdout.contains(&format!("--config {file} ")), "{lines:?}");
}

/// Issue 14, item 12: a client's environment does not reach nap's settings
/// in forced-command mode, even where sshd accepts it (`AcceptEnv NAP_*`):
/// the settings are the `authorized_keys` line's and the settings file's.
#[test]
fn a_clients_nap_variables_do_not_change_a_forced_commands_settings() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let lines = gateway.nap(&["keys", "authorized-keys"], "");
    lines.assert_ok();
    let sshd = Sshd::start_with(&lines.stdout, "AcceptEnv NAP_*\n");
    let run: nap_tests::Run = std::process::Command::new("ssh")
        .args(ssh_options(&alice.private))
        .args(["-o", "SetEnv=NAP_STORE=etcd://127.0.0.1:1 NAP_CONFIG=/nonexistent NAP_LOG=trace"])
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "apps"])
        .output()
        .expect("ssh")
        .into();
    run.assert_ok();
    assert!(!run.stderr.contains("127.0.0.1:1"), "{run:?}");
}

/// Issue 14, item 12: behind OpenSSH, a command that writes nothing for a
/// while (`logs --follow` of a quiet app) still ends when its client goes.
#[test]
fn a_forced_command_ends_when_its_client_goes() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("fcgone");
    AppRepo::new(AppKind::Web).push(&gateway, &alice, &app, "master").assert_ok();
    let lines = gateway.nap(&["keys", "authorized-keys"], "");
    let sshd = Sshd::start(&lines.assert_ok().stdout);

    let mut follow = std::process::Command::new("ssh")
        .args(ssh_options(&alice.private))
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "logs", &app, "--follow"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh");
    // This gateway's forced commands name its data directory.
    let data_dir = gateway.data_dir().display().to_string();
    let running = || {
        let found = std::process::Command::new("pgrep").args(["-f", &format!("{data_dir} ssh-command")]).output();
        found.is_ok_and(|found| !found.stdout.is_empty())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running() {
        assert!(std::time::Instant::now() < deadline, "the forced command did not start:\n{}", sshd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    follow.kill().expect("kill ssh");
    let _ = follow.wait();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running() {
        assert!(std::time::Instant::now() < deadline, "logs --follow runs on after its client went");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_forced_commands_key_removed_meanwhile_ends_it() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("fcremoved");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let dev = gateway.user_for("dev", &[&app]);
    let sshd = Sshd::start(&gateway.nap(&["keys", "authorized-keys"], "").assert_ok().stdout);
    let follow = std::process::Command::new("ssh")
        .args(ssh_options(&dev.private))
        .args(["-p", &sshd.port.to_string(), "root@127.0.0.1", "logs", &app, "--follow"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    std::thread::sleep(Duration::from_secs(2));
    gateway.ssh(&admin, "nap", &["keys", "remove", "dev"]).assert_ok();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(follow.wait_with_output());
    });
    let output = ended.recv_timeout(Duration::from_secs(15)).expect("logs --follow ran on for a removed key");
    let run: nap_tests::Run = output.expect("ssh's output").into();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("error: the key \"dev\" is no longer allowed in"), "{run:?}");
}

/// `run` behind OpenSSH: sshd's pty (`ssh -tt`, allowed by the `pty` after
/// `restrict`) gives the container a terminal.
#[test]
fn run_behind_a_forced_command_gets_a_terminal() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let sshd = Sshd::start(&gateway.nap(&["keys", "authorized-keys"], "").stdout);
    let app = unique("openrun");
    AppRepo::new(AppKind::Web).push_to(&alice, &sshd.remote(&app), "master").assert_ok();
    let ssh = |tty: &[&str], command: &[&str]| -> nap_tests::Run {
        std::process::Command::new("ssh")
            .args(ssh_options(&alice.private))
            .args(tty)
            .args(["-p", &sshd.port.to_string(), "root@127.0.0.1"])
            .args(command)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh")
            .into()
    };
    let plain = ssh(&[], &["run", &app, "--", "sh", "-c", "'echo plain; exit 7'"]);
    assert_eq!((plain.code, plain.stdout.as_str()), (Some(7), "plain\n"), "{plain:?}");
    // (The size cannot be read back here: this machine's kernel answers
    // TIOCGWINSZ on a container's pty with ECHILD, even under `docker run -t`.)
    let tty = ssh(&["-tt"], &["run", &app, "--", "tty"]);
    assert!(tty.stdout.contains("/dev/pts/"), "{tty:?}\n{}", sshd.log());
    assert!(nap_tests::one_offs_of(&app).is_empty());
}
