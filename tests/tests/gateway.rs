//! The gateway process itself: its host key, and a graceful SIGTERM.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, Run, unique, wait_for_body};

fn host_key(gateway: &Gateway) -> String {
    let scan: Run = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &gateway.port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan")
        .into();
    let key = scan
        .stdout
        .lines()
        .find(|l| l.contains("ssh-ed25519"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "));
    key.unwrap_or_else(|| panic!("no ed25519 host key: {scan:?}"))
}

#[test]
fn the_host_key_is_made_once_and_kept_across_restarts() {
    let mut gateway = Gateway::start();
    let key_file = gateway.data_dir().join("ssh_host_ed25519_key");
    assert!(key_file.exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).expect("key").permissions());
    assert_eq!(mode & 0o077, 0, "the host key is readable by others");
    let before = host_key(&gateway);
    gateway.restart();
    assert_eq!(host_key(&gateway), before);
}

#[test]
fn sigterm_stops_accepting_but_lets_a_running_push_finish() {
    let mut gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("sigterm");
    let repo = AppRepo::new(AppKind::Slow);
    let push = repo.spawn_push(&gateway, &alice, &app, "master");
    // Wait until the deploy is under way.
    let lock = gateway.lock_path(&app);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).map_or(true, |t| t.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the deploy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = gateway.port;
    let status = gateway.terminate();
    assert_eq!(status, Some(0), "{}", gateway.log());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still accepting after SIGTERM");

    let push: Run = push.wait_with_output().expect("push").into();
    push.assert_ok();
    assert!(wait_for_body(&push.url().expect("url"), "hello from slow", Duration::from_secs(10)));
}
