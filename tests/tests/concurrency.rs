//! Pushes run side by side across apps, one at a time per app, and a killed
//! push never blocks the next one.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use nap_tests::{AppKind, AppRepo, Gateway, Run, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);

/// Waits until a deploy holds `lock` and has written who it is; answers that.
fn wait_for_holder(lock: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(lock)
            && !text.is_empty()
            && is_locked(lock)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "no deploy took {}", lock.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_locked(lock: &Path) -> bool {
    File::open(lock).is_ok_and(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
}

fn wait_until_unlocked(lock: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while is_locked(lock) {
        assert!(Instant::now() < deadline, "{} stayed locked", lock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_push_to_a_deploying_app_fails_at_once_naming_the_first() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let bob = gateway.user("bob");
    let app = unique("busy");
    let repo = AppRepo::new(AppKind::Slow);
    repo.push(&gateway, &alice, &app, "master").assert_ok();

    let sha = repo.commit("index.html", "v2\n");
    let first = repo.spawn_push(&gateway, &alice, &app, "master");
    let holder = wait_for_holder(&gateway.lock_path(&app));
    assert!(holder.contains(&format!("push of {} by alice", &sha[..7])), "{holder}");

    let other = AppRepo::new(AppKind::Web);
    let started = Instant::now();
    let second = other.push(&gateway, &bob, &app, "+master");
    second.assert_failed_with(&format!("{app} is already deploying (push of {} by alice, pid", &sha[..7]));
    second.assert_failed_with("pre-receive hook declined");
    assert!(started.elapsed() < Duration::from_secs(5), "the refusal waited for the first push");

    let first: Run = first.wait_with_output().expect("first push").into();
    first.assert_ok();
    assert!(wait_for_body(&first.url().expect("url"), "v2", ANSWER));
    assert_eq!(gateway.branch_sha(&app, "master"), Some(sha));
}

#[test]
fn pushes_to_different_apps_run_at_the_same_time() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let apps = [unique("par"), unique("par")];
    let repo = AppRepo::new(AppKind::Slow);
    let pushes: Vec<_> = apps.iter().map(|app| repo.spawn_push(&gateway, &alice, app, "master")).collect();
    // Both hold their deploy lock at once.
    for app in &apps {
        wait_for_holder(&gateway.lock_path(app));
    }
    assert!(apps.iter().all(|app| is_locked(&gateway.lock_path(app))), "the deploys did not overlap");
    for push in pushes {
        let run: Run = push.wait_with_output().expect("push").into();
        run.assert_ok();
    }
}

#[test]
fn killing_the_ssh_client_mid_deploy_does_not_block_the_next_push() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("killclient");
    let repo = AppRepo::new(AppKind::Slow);
    let push = repo.spawn_push(&gateway, &alice, &app, "master");
    wait_for_holder(&gateway.lock_path(&app));
    // kill -9 of git push and its ssh client.
    killpg(Pid::from_raw(i32::try_from(push.id()).expect("a pid")), Signal::SIGKILL).expect("kill the push");
    drop(push);
    wait_until_unlocked(&gateway.lock_path(&app), Duration::from_secs(10));

    repo.become_kind(AppKind::Web);
    let next = repo.push(&gateway, &alice, &app, "master");
    next.assert_ok();
    assert!(wait_for_body(&next.url().expect("url"), "hello from web", ANSWER));
}

#[test]
fn killing_the_hook_mid_deploy_does_not_block_the_next_push() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("killhook");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &alice, &app, "master").assert_ok();

    repo.become_kind(AppKind::Slow);
    let push = repo.spawn_push(&gateway, &alice, &app, "master");
    let holder = wait_for_holder(&gateway.lock_path(&app));
    let pid: i32 = holder
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {holder:?}"));
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill the hook");
    let killed: Run = push.wait_with_output().expect("push").into();
    killed.assert_failed_with("pre-receive hook declined");

    repo.commit("index.html", "after the kill\n");
    let next = repo.push(&gateway, &alice, &app, "master");
    next.assert_ok();
    assert!(wait_for_body(&next.url().expect("url"), "after the kill", ANSWER));
    // The killed push's release is recorded as interrupted, and its container is gone.
    assert_eq!(nap_tests::containers_of(&app).len(), 1, "{:?}", nap_tests::containers_of(&app));
}
