//! A push that cannot deploy is refused, and nothing is lost: the ref stays
//! where it was, and the previous release keeps answering.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, containers_of, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);

/// Deploys a good v1, then pushes `kind` over it and checks the refusal.
fn refused_over_a_good_release(kind: AppKind, reason: &str, log_line: Option<&str>) {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("fail");
    let repo = AppRepo::new(AppKind::Web);
    let good = repo.push(&gateway, &alice, &app, "master");
    good.assert_ok();
    let url = good.url().expect("url");
    let good_sha = repo.head();

    repo.become_kind(kind);
    let bad = repo.push(&gateway, &alice, &app, "master");
    bad.assert_failed_with("pre-receive hook declined");
    bad.assert_failed_with(reason);
    if let Some(line) = log_line {
        bad.assert_failed_with(line);
    }
    bad.assert_failed_with(&format!("{app} keeps serving v1 at {url}"));

    assert_eq!(gateway.branch_sha(&app, "master"), Some(good_sha), "the ref moved");
    assert!(wait_for_body(&url, "hello from web", ANSWER), "v1 stopped answering");
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v1-web.1")], "a failed release left a container");

    // The next good push still works, and takes the next number.
    repo.become_kind(AppKind::Web);
    repo.commit("index.html", "fixed\n");
    let fixed = repo.push(&gateway, &alice, &app, "master");
    fixed.assert_ok();
    assert!(fixed.stderr.contains("v3 is live"), "{}", fixed.stderr);
}

#[test]
fn a_missing_dockerfile_is_refused() {
    refused_over_a_good_release(AppKind::NoDockerfile, "no Dockerfile at the root of", None);
}

#[test]
fn a_failing_build_is_refused_with_its_last_lines() {
    refused_over_a_good_release(
        AppKind::BrokenBuild,
        "remote:  !     build failed: The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3",
        Some("remote:  !     about to fail"),
    );
}

#[test]
fn an_image_that_exits_at_once_is_refused_with_its_log() {
    refused_over_a_good_release(AppKind::Exits, "exited at once (exit code 4)", Some("crashing on purpose"));
}

#[test]
fn an_app_that_never_answers_fails_the_start_check() {
    refused_over_a_good_release(
        AppKind::Deaf,
        "did not answer HTTP on port 5000 within 8 s; it listens on no TCP port: it must listen on PORT=5000",
        Some("not listening"),
    );
}

#[test]
fn an_app_on_a_port_of_its_own_is_told_to_read_port() {
    refused_over_a_good_release(
        AppKind::FixedPort,
        "did not answer HTTP on port 5000 within 8 s; it listens on 8080, not on PORT=5000: read PORT from the environment",
        Some("serving on 8080 whatever PORT says"),
    );
}

#[test]
fn a_refused_first_push_leaves_no_repo_behind() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("firstfail");
    let repo = AppRepo::new(AppKind::BrokenBuild);
    repo.push(&gateway, &alice, &app, "master").assert_failed_with("pre-receive hook declined");
    assert!(!gateway.repo_path(&app).exists(), "half-made repo left behind");
    assert!(containers_of(&app).is_empty());

    repo.become_kind(AppKind::Web);
    let push = repo.push(&gateway, &alice, &app, "master");
    push.assert_ok();
    assert!(wait_for_body(&push.url().expect("url"), "hello from web", ANSWER));
}

#[test]
fn a_dead_docker_daemon_is_one_clear_line() {
    // The hook inherits the gateway's environment, so this gateway's deploys
    // talk to a daemon that is not there.
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{}\"\n", nap_tests::REGISTRY))
        .env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")])
        .start();
    let alice = gateway.user("alice");
    let app = unique("nodaemon");
    let repo = AppRepo::new(AppKind::Web);
    let push = repo.push(&gateway, &alice, &app, "master");
    push.assert_failed_with("remote:  !     cannot reach the Docker daemon");
    push.assert_failed_with("pre-receive hook declined");
    assert!(!gateway.repo_path(&app).exists());
}
