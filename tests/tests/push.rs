//! Push to deploy, the happy paths: real `git push` over real `ssh` into
//! `nap serve`, real builds on dockerd, images in the real registry.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Deployed, Gateway, containers_of, get, registry_tags, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);

#[test]
fn first_push_builds_tags_pushes_runs_and_prints_the_url() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("hello");
    let repo = AppRepo::new(AppKind::Web);

    assert!(!gateway.repo_path(&app).exists());
    let push = repo.push(&gateway, &alice, &app, "master");
    push.assert_ok();

    // Every step reaches the pusher as remote: lines.
    for step in ["remote: -----> Deploying", "Step 1/", "remote: -----> Releasing v1 with PORT=5000", "is live"] {
        assert!(push.stderr.contains(step), "missing {step:?} in:\n{}", push.stderr);
    }
    let url = push.url().expect("the push prints the app's URL");
    // No host port is published: with the router off, the URL is the
    // container's own address on its app's network.
    let ip = nap_tests::docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"nap-{app}\").IPAddress}}}}"),
        &format!("nap-{app}-v1-web.1"),
    ]);
    assert_eq!(url, format!("http://{}:5000/", ip.stdout.trim()));
    let ports = nap_tests::docker(&["port", &format!("nap-{app}-v1-web.1")]);
    assert!(ports.stdout.trim().is_empty(), "a host port is published: {ports:?}");
    assert!(wait_for_body(&url, "hello from web", ANSWER), "{url} does not answer");

    // The repo was created by the push and holds the commit.
    assert_eq!(gateway.branch_sha(&app, "master"), Some(repo.head()));
    // The image is tagged by release and by commit, and pushed.
    let tags = registry_tags(&app);
    assert!(tags.contains(&"v1".to_owned()), "{tags:?}");
    assert!(tags.contains(&format!("git-{}", &repo.head()[..7])), "{tags:?}");
    // One container, readable name, restart policy unless-stopped.
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v1-web.1")]);
    let policy =
        nap_tests::docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", &format!("nap-{app}-v1-web.1")]);
    assert_eq!(policy.stdout.trim(), "unless-stopped");
}

#[test]
fn next_push_replaces_the_release_and_retires_the_old_container() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("replace");
    let repo = AppRepo::new(AppKind::Web);
    let first = repo.push(&gateway, &alice, &app, "master");
    first.assert_ok();
    let old_url = first.url().expect("url");

    repo.commit("index.html", "second version\n");
    let second = repo.push(&gateway, &alice, &app, "master");
    second.assert_ok();
    assert!(second.stderr.contains(&format!("Retired nap-{app}-v1-web.1")), "{}", second.stderr);
    let url = second.url().expect("url");
    assert!(wait_for_body(&url, "second version", ANSWER));
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v2-web.1")]);
    assert!(old_url == url || get(&old_url).is_none(), "the old release still answers at {old_url}");
}

#[test]
fn a_tree_that_was_already_built_is_not_rebuilt() {
    let Deployed { gateway, key: alice, app, repo, push: _ } =
        Deployed::push_as(Gateway::start(), "alice", AppKind::Web, "reuse");

    repo.commit_empty();
    let again = repo.push(&gateway, &alice, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains("built from the same tree; no rebuild"), "{}", again.stderr);
    assert!(!again.stderr.contains("Step 1/"), "it rebuilt:\n{}", again.stderr);
    assert!(wait_for_body(&again.url().expect("url"), "hello from web", ANSWER));
    assert!(registry_tags(&app).contains(&"v2".to_owned()));
}

/// Issue 14, item 1: labels prove nothing. Anyone who can build (a key
/// allowed only for another app) can make an image labelled `nap.app=APP`
/// and `nap.tree=TREE` with APP's public tree; APP's push must build its own.
#[test]
fn an_image_labelled_as_another_apps_tree_is_never_reused() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("planted");
    let repo = AppRepo::new(AppKind::Web);
    let tree = std::process::Command::new("git")
        .current_dir(&repo.path)
        .args(["rev-parse", "HEAD^{tree}"])
        .output()
        .expect("git rev-parse");
    let tree = String::from_utf8(tree.stdout).expect("utf-8").trim().to_owned();
    let context = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM nap/busybox\nCMD [\"sh\",\"-c\",\"mkdir /w && echo planted > /w/index.html && exec httpd -f -p $PORT -h /w\"]\n",
    )
    .expect("write Dockerfile");
    gateway.cleanup().app(&app);
    nap_tests::docker(&[
        "build",
        "-q",
        "--label",
        &format!("nap.app={app}"),
        "--label",
        &format!("nap.tree={tree}"),
        "-t",
        &format!("planted-{app}:latest"),
        context.path().to_str().expect("utf-8 path"),
    ])
    .assert_ok();

    let push = repo.push(&gateway, &alice, &app, "master");
    push.assert_ok();
    assert!(!push.stderr.contains("no rebuild"), "it reused the planted image:\n{}", push.stderr);
    assert!(wait_for_body(&push.url().expect("url"), "hello from web", ANSWER));

    // What nap built itself is still reused.
    repo.commit_empty();
    let again = repo.push(&gateway, &alice, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains("built from the same tree; no rebuild"), "{}", again.stderr);
    assert!(wait_for_body(&again.url().expect("url"), "hello from web", ANSWER));
}

#[test]
fn a_single_exposed_port_becomes_port() {
    let Deployed { gateway: _gateway, key: _, app: _, repo: _, push } =
        Deployed::push_as(Gateway::start(), "alice", AppKind::Exposed, "exposed");
    assert!(push.stderr.contains("PORT=8080"), "{}", push.stderr);
    assert!(wait_for_body(&push.url().expect("url"), "hello from exposed", ANSWER));
}

#[test]
fn other_branches_are_stored_but_not_deployed() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("branch");
    let repo = AppRepo::new(AppKind::Web);
    let push = repo.push(&gateway, &alice, &app, "master:feature");
    push.assert_ok();
    assert!(push.stderr.contains("remote: -----> Branch feature stored, not deployed"), "{}", push.stderr);
    assert_eq!(gateway.branch_sha(&app, "feature"), Some(repo.head()));
    assert!(containers_of(&app).is_empty());

    // main deploys as master does.
    let main = repo.push(&gateway, &alice, &app, "master:main");
    main.assert_ok();
    assert!(wait_for_body(&main.url().expect("url"), "hello from web", ANSWER));
}

#[test]
fn clone_and_fetch_work_and_the_user_name_is_ignored() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = unique("clone");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &alice, &app, "master:feature").assert_ok();

    let into = tempfile::tempdir().expect("temp dir");
    for (n, user) in ["git", "nap", "whoever"].iter().enumerate() {
        for path in [format!("/{app}"), format!("/{app}.git")] {
            let url = format!("ssh://{user}@127.0.0.1:{}{path}", gateway.port);
            let dest = into.path().join(format!("{n}{}", path.len()));
            let clone: nap_tests::Run = std::process::Command::new("git")
                .env("GIT_SSH_COMMAND", alice.ssh_command())
                .args(["clone", "-q", "--branch", "feature", &url])
                .arg(&dest)
                .output()
                .expect("git clone")
                .into();
            clone.assert_ok();
            assert!(dest.join("Dockerfile").exists());
        }
    }
    // scp-style remote, as in `git remote add nap iwanna@host:app`, over ssh -p via GIT_SSH_COMMAND.
    let fetch: nap_tests::Run = std::process::Command::new("git")
        .current_dir(&repo.path)
        .env("GIT_SSH_COMMAND", format!("{} -p {}", alice.ssh_command(), gateway.port))
        .args(["fetch", "-q", &format!("iwanna@127.0.0.1:{app}"), "feature"])
        .output()
        .expect("git fetch")
        .into();
    fetch.assert_ok();
}
