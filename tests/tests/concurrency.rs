//! Pushes run side by side across apps, one at a time per app, and a killed
//! push never blocks the next one.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use nap_tests::{AppKind, AppRepo, Deployed, Gateway, Run, unique, wait_for_body};

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
    let Deployed { gateway, key: alice, app, repo, push: _ } =
        Deployed::push_as(Gateway::start(), "alice", AppKind::Web, "killhook");

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

/// Issue 14, item 8: two first pushes at once. The one that loses the
/// deploy lock is refused, and must not take the repo away from the one
/// that won: its ref is there afterwards and its release serves.
#[test]
fn two_first_pushes_at_once_leave_the_winners_ref() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let apps = [unique("first"), unique("first")];
    let repos = [AppRepo::new(AppKind::Slow), AppRepo::new(AppKind::Slow)];
    repos[1].commit("index.html", "the other one\n");
    let pushes: Vec<_> = apps
        .iter()
        .flat_map(|app| repos.iter().map(move |repo| (app, repo)))
        .map(|(app, repo)| (app, repo.head(), repo.spawn_push(&gateway, &alice, app, "master")))
        .collect();
    let mut won = Vec::new();
    for (app, head, push) in pushes {
        let run: Run = push.wait_with_output().expect("push").into();
        if run.ok() {
            won.push((app, head, run));
        } else {
            run.assert_failed_with("is already deploying");
        }
    }
    for app in &apps {
        let winners: Vec<_> = won.iter().filter(|(name, ..)| name == &app).collect();
        let [(_, head, run)] = winners.as_slice() else { panic!("{} pushes to {app} won", winners.len()) };
        assert_eq!(gateway.branch_sha(app, "master").as_ref(), Some(head), "{app}: the winner's ref is gone");
        let body = if repos[0].head() == *head { "hello from slow" } else { "the other one" };
        assert!(wait_for_body(&run.url().expect("url"), body, ANSWER));
    }
}

/// Issue 14, item 9: config changes side by side all land. Each is read,
/// changed and saved under the app's deploy lock (a change waits for the
/// one before it), with a release or without (`--no-restart`).
#[test]
fn twenty_config_changes_at_once_all_land() {
    let Deployed { gateway, key: alice, app, repo: _, push: _ } =
        Deployed::push_as(Gateway::start(), "alice", AppKind::Web, "cfgrace");

    let runs: Vec<(String, Run)> = std::thread::scope(|scope| {
        let changes: Vec<_> = (0..20)
            .map(|n| {
                let (gateway, alice, app) = (&gateway, &alice, &app);
                scope.spawn(move || {
                    let pair = format!("KEY_{n}=value-{n}");
                    let mut args = vec!["config", "set", app.as_str(), pair.as_str()];
                    if n % 2 == 1 {
                        args.push("--no-restart");
                    }
                    let run: Run = gateway.ssh_command(alice, "nap", &args).output().expect("ssh").into();
                    (pair, run)
                })
            })
            .collect();
        changes.into_iter().map(|change| change.join().expect("a config change")).collect()
    });
    for (pair, run) in &runs {
        assert!(run.ok(), "config set {pair}: {}", run.stderr);
    }
    let config = gateway.ssh(&alice, "nap", &["config", &app, "--reveal"]);
    config.assert_ok();
    let lines: Vec<&str> = config.stdout.lines().collect();
    for (pair, _) in &runs {
        assert!(lines.contains(&pair.as_str()), "{pair} was lost:\n{}", config.stdout);
    }
}
