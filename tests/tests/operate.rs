//! Operating apps over real `ssh`: apps, ps, logs, config, releases,
//! rollback, restart, keys, permissions and `--json`.

use std::io::Read;
use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Deployed, Gateway, Key, Run, containers_of, docker, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);

fn json(run: &Run) -> serde_json::Value {
    run.assert_ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// A gateway with an admin key and one deployed web app.
fn deployed() -> Deployed {
    Deployed::push(Gateway::start(), AppKind::Web, "op")
}

#[test]
fn apps_lists_creates_and_destroys_leaving_nothing_behind() {
    let deployed = deployed();
    let url = deployed.url();
    let Deployed { gateway, key: admin, app, repo: _repo, .. } = deployed;
    let other = unique("created");
    gateway.ssh(&admin, "nap", &["apps", "create", &other]).assert_ok();
    gateway
        .ssh(&admin, "nap", &["apps", "create", &other])
        .assert_failed_with(&format!("error: app {other} already exists"));

    let apps = json(&gateway.ssh(&admin, "nap", &["apps", "--json"]));
    let find = |name: &str| apps.as_array().expect("array").iter().find(|a| a["name"] == name).cloned().expect(name);
    assert_eq!(find(&app)["release"], 1);
    assert_eq!(find(&app)["state"], "running");
    assert_eq!(find(&app)["url"], url.as_str());
    assert_eq!(find(&other)["state"], "new");
    let text = gateway.ssh(&admin, "nap", &["apps"]);
    assert!(text.stdout.contains(&app) && text.stdout.contains("v1"), "{}", text.stdout);
    // The host's own CLI sees the same.
    assert!(gateway.nap(&["apps"], "").stdout.contains(&app));

    let refused = gateway.ssh(&admin, "nap", &["apps", "destroy", &app]);
    refused.assert_failed_with("run again with --force");
    assert!(wait_for_body(&url, "hello from web", ANSWER));

    let images = |app: &str| docker(&["images", "-q", "--filter", &format!("label=nap.app={app}")]).stdout;
    assert!(!images(&app).trim().is_empty(), "no image was built for {app}");
    let destroyed = gateway.ssh(&admin, "nap", &["apps", "destroy", &app, "--force"]);
    destroyed.assert_ok();
    assert!(destroyed.stdout.contains("2 local image tag(s)"), "v1 and git-SHORT: {destroyed:?}");
    assert!(destroyed.stdout.contains("removed 1 container(s)"), "{destroyed:?}");
    assert!(containers_of(&app).is_empty(), "containers left: {:?}", containers_of(&app));
    assert_eq!(images(&app).trim(), "", "images left");
    assert!(!gateway.repo_path(&app).exists(), "repo left");
    gateway.ssh(&admin, "nap", &["releases", &app]).assert_failed_with(&format!("error: app {app} does not exist"));
    let apps = json(&gateway.ssh(&admin, "nap", &["apps", "--json"]));
    assert!(apps.as_array().expect("array").iter().all(|a| a["name"] != app.as_str()));
    // The name is free again.
    gateway.ssh(&admin, "nap", &["apps", "create", &app]).assert_ok();
}

#[test]
fn config_set_reaches_the_app_as_a_new_release_and_unset_removes_it() {
    let deployed = deployed();
    let _url = deployed.url();
    let Deployed { gateway, key: admin, app, repo: _repo, .. } = deployed;
    let set = gateway.ssh(&admin, "nap", &["config", "set", &app, "'GREETING=hello there'", "COLOR=blue"]);
    set.assert_ok();
    assert!(set.stdout.contains(&format!("{app} v2: config set GREETING, COLOR")), "{}", set.stdout);
    assert!(set.stderr.contains("Releasing v2"), "progress goes to stderr: {}", set.stderr);
    let url = set.stdout.split("live at ").nth(1).expect("url").trim().to_owned();
    assert!(wait_for_body(&format!("{url}cgi-bin/env"), "GREETING=hello there", ANSWER));
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v2-web.1")]);

    let masked = gateway.ssh(&admin, "nap", &["config", &app]);
    masked.assert_ok();
    assert!(masked.stdout.contains("GREETING=********") && !masked.stdout.contains("hello there"), "{}", masked.stdout);
    let revealed = json(&gateway.ssh(&admin, "nap", &["config", &app, "--reveal", "--json"]));
    assert_eq!(revealed["GREETING"], "hello there");

    // --no-restart only stores the change.
    let quiet = gateway.ssh(&admin, "nap", &["config", "set", &app, "LATER=1", "--no-restart"]);
    quiet.assert_ok();
    assert!(quiet.stdout.contains("takes effect with the next release"), "{}", quiet.stdout);
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v2-web.1")]);

    let unset = json(&gateway.ssh(&admin, "nap", &["config", "unset", &app, "GREETING", "--json"]));
    assert_eq!(unset["version"], 3);
    // Names in --json, values masked (config --reveal shows them).
    assert_eq!(unset["config"], serde_json::json!({"COLOR": "********", "LATER": "********"}));
    let url = unset["url"].as_str().expect("url").to_owned();
    assert!(wait_for_body(&format!("{url}cgi-bin/env"), "GREETING=", ANSWER));

    // Bad input changes nothing.
    for (args, error) in [
        (
            vec!["config", "set", &app, "NOEQUALS"],
            "error: malformed config pair (the 1st given): expected KEY=VALUE; quote a value that holds spaces",
        ),
        (vec!["config", "set", &app, "1BAD=x"], "error: invalid config key \"1BAD\""),
        (vec!["config", "set", &app, "PORT=1"], "error: PORT is set by nap"),
        (vec!["config", "unset", &app, "NOPE"], "error: NOPE is not set for"),
        (vec!["config", "set", "nosuchapp", "A=1"], "error: app nosuchapp does not exist"),
    ] {
        let run = gateway.ssh(&admin, "nap", &args);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(error), "{args:?}: {:?}", run.stderr);
    }
    let releases = json(&gateway.ssh(&admin, "nap", &["releases", &app, "--json"]));
    assert_eq!(releases.as_array().map(Vec::len), Some(3), "a refused command made a release");
}

#[test]
fn rollback_runs_an_older_release_again_as_a_new_one() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("rollback");
    let repo = AppRepo::new(AppKind::Web);
    repo.commit("index.html", "one\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    repo.commit("index.html", "two\n");
    let two = repo.push(&gateway, &admin, &app, "master");
    two.assert_ok();
    assert!(wait_for_body(&two.url().expect("url"), "two", ANSWER));
    // v3 fails: it never serves, and rollback refuses it.
    repo.become_kind(AppKind::Exits);
    repo.push(&gateway, &admin, &app, "master").assert_failed_with("exited at once");

    let back = gateway.ssh(&admin, "nap", &["rollback", &app]);
    back.assert_ok();
    assert!(back.stdout.contains(&format!("{app} v4: rollback to v1")), "{}", back.stdout);
    let url = back.stdout.split("live at ").nth(1).expect("url").trim().to_owned();
    assert!(wait_for_body(&url, "one", ANSWER), "the answer did not change back");

    let again = json(&gateway.ssh(&admin, "nap", &["rollback", &app, "v2", "--json"]));
    assert_eq!(again["version"], 5);
    assert_eq!(again["cause"], serde_json::json!({"kind": "rollback", "key": "admin", "to": 2}));
    assert!(wait_for_body(again["url"].as_str().expect("url"), "two", ANSWER));

    gateway
        .ssh(&admin, "nap", &["rollback", &app, "v3"])
        .assert_failed_with("error: v3 failed; rollback only goes to a release that ran");
    gateway
        .ssh(&admin, "nap", &["rollback", &app, "v99"])
        .assert_failed_with(&format!("error: {app} has no release v99"));
    gateway.ssh(&admin, "nap", &["rollback", &app, "latest"]).assert_failed_with("error: \"latest\" is not a release");

    let list = gateway.ssh(&admin, "nap", &["releases", &app]);
    list.assert_ok();
    for expected in ["v5*", "rollback to v2 by admin", "rollback to v1 by admin", "failed", "push by admin"] {
        assert!(list.stdout.contains(expected), "missing {expected:?} in\n{}", list.stdout);
    }
}

#[test]
fn ps_logs_and_restart() {
    let deployed = deployed();
    let url = deployed.url();
    let Deployed { gateway, key: admin, app, repo: _repo, .. } = deployed;
    let ps = json(&gateway.ssh(&admin, "nap", &["ps", &app, "--json"]));
    let instance = &ps[0];
    assert_eq!(instance["release"], 1);
    assert_eq!(instance["state"], "running");
    assert_eq!(instance["container"], format!("nap-{app}-v1-web.1"));
    assert_eq!(instance["url"], url.as_str());
    assert!(gateway.ssh(&admin, "nap", &["ps", &app]).stdout.contains("running"));

    nap_tests::get(&url);
    let logs = gateway.ssh(&admin, "nap", &["logs", &app, "--tail", "50"]);
    logs.assert_ok();
    assert!(logs.stdout.contains("starting web on 5000"), "{logs:?}");
    gateway
        .ssh(&admin, "nap", &["logs", &app, "--json"])
        .assert_failed_with("error: logs streams lines as they come and has no --json");

    // A restart starts a fresh instance of v1 and retires the old one; it
    // never restarts in place.
    let restart = json(&gateway.ssh(&admin, "nap", &["restart", &app, "--json"]));
    assert_eq!(restart["release"], 1);
    assert_eq!(restart["container"], format!("nap-{app}-v1.1-web.1"));
    let exists = |name: &str| docker(&["inspect", name]).code == Some(0);
    assert!(!exists(&format!("nap-{app}-v1-web.1")), "the old instance is retired");
    let url = restart["url"].as_str().expect("the fresh instance's url");
    assert!(wait_for_body(url, "hello from web", ANSWER));
    let ps = json(&gateway.ssh(&admin, "nap", &["ps", &app, "--json"]));
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(ps[0]["container"], format!("nap-{app}-v1.1-web.1"));
}

/// Open file descriptors of a process: a leaked Docker log request or task
/// would keep its socket open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn logs_follow_streams_and_ends_cleanly_when_the_client_goes_away() {
    let deployed = deployed();
    let url = deployed.url();
    let Deployed { gateway, key: admin, app, repo: _repo, .. } = deployed;
    let baseline = open_fds(gateway.pid());
    let mut follow = gateway.ssh_command(&admin, "nap", &["logs", &app, "--follow"]).spawn().expect("ssh");
    let mut stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("url:/followed") {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // A request made now shows up in the stream.
    let deadline = Instant::now() + ANSWER;
    while !reader.is_finished() && Instant::now() < deadline {
        nap_tests::get(&format!("{url}followed"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // kill -9 of the client, whether or not the line came.
    follow.kill().expect("kill ssh");
    follow.wait().expect("wait ssh");
    let seen = reader.join().expect("reader");
    assert!(seen.contains("url:/followed"), "{seen}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(gateway.pid()) > baseline {
        assert!(
            Instant::now() < deadline,
            "nap serve still holds {} fds (baseline {baseline})",
            open_fds(gateway.pid())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn non_admin_keys_reach_exactly_their_apps() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("perm");
    let staging = format!("{app}-staging");
    let dev = gateway.user_for("dev", &[&staging]);
    let repo = AppRepo::new(AppKind::Web);

    repo.push(&gateway, &dev, &staging, "master").assert_ok();
    let refused = repo.push(&gateway, &dev, &app, "master");
    refused.assert_failed_with(&format!("error: key dev may not use app {app}"));
    assert!(!gateway.repo_path(&app).exists());
    repo.push(&gateway, &admin, &app, "master").assert_ok();

    for args in [
        vec!["config", &app],
        vec!["config", "set", &app, "A=1"],
        vec!["ps", &app],
        vec!["logs", &app],
        vec!["releases", &app],
        vec!["rollback", &app],
        vec!["restart", &app],
        vec!["apps", "destroy", &app, "--force"],
        vec!["git-upload-pack", &app],
    ] {
        let run = gateway.ssh(&dev, "nap", &args);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(&format!("error: key dev may not use app {app}")), "{args:?}: {:?}", run.stderr);
    }
    gateway.ssh(&dev, "nap", &["keys"]).assert_failed_with("error: only admin keys may manage keys");
    gateway.ssh(&dev, "nap", &["config", &staging]).assert_ok();
    let apps = json(&gateway.ssh(&dev, "nap", &["apps", "--json"]));
    let names: Vec<&str> = apps.as_array().expect("array").iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, vec![staging.as_str()]);
}

#[test]
fn admins_manage_keys_over_ssh() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let bob = Key::generate();
    let added = gateway.ssh_with_input(&admin, "nap", &["keys", "add", "bob", "--apps", "a,b-c"], &bob.public_text());
    added.assert_ok();
    assert!(added.stdout.contains("added key bob (SHA256:") && added.stdout.contains("for apps a,b-c"), "{added:?}");
    let keys = json(&gateway.ssh(&admin, "nap", &["keys", "--json"]));
    let bob_entry = keys.as_array().expect("array").iter().find(|k| k["name"] == "bob").cloned().expect("bob");
    assert_eq!(bob_entry["apps"], serde_json::json!(["a", "b-c"]));
    assert_eq!(bob_entry["admin"], false);
    assert!(gateway.ssh(&bob, "nap", &["version"]).ok());

    gateway
        .ssh_with_input(&admin, "nap", &["keys", "add", "eve", "--apps", "Bad_App"], &Key::generate().public_text())
        .assert_failed_with("error: invalid app name \"Bad_App\"");
    gateway
        .ssh_with_input(&admin, "nap", &["keys", "add", "eve"], "not a key")
        .assert_failed_with("error: not an OpenSSH public key");
    gateway.ssh(&admin, "nap", &["keys", "remove", "bob"]).assert_ok();
    assert_eq!(gateway.ssh(&bob, "nap", &["version"]).code, Some(255));
}

#[test]
fn every_command_answers_json_and_unknown_apps_get_one_line() {
    let deployed = deployed();
    let _url = deployed.url();
    let Deployed { gateway, key: admin, app, repo: _repo, .. } = deployed;
    for args in [
        vec!["apps", "--json"],
        vec!["ps", &app, "--json"],
        vec!["config", &app, "--json"],
        vec!["releases", &app, "--json"],
        vec!["keys", "--json"],
        vec!["version", "--json"],
    ] {
        json(&gateway.ssh(&admin, "nap", &args));
    }
    for args in [
        vec!["ps", "nosuchapp"],
        vec!["logs", "nosuchapp"],
        vec!["config", "nosuchapp"],
        vec!["releases", "nosuchapp"],
        vec!["rollback", "nosuchapp"],
        vec!["restart", "nosuchapp"],
        vec!["apps", "destroy", "nosuchapp", "--force"],
    ] {
        let run = gateway.ssh(&admin, "nap", &args);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert_eq!(run.stderr, "error: app nosuchapp does not exist\n", "{args:?}");
    }
}

#[test]
fn what_the_host_does_is_recorded_as_the_host_not_as_a_key() {
    let deployed = deployed();
    let _url = deployed.url();
    let Deployed { gateway, key: _admin, app, repo: _repo, .. } = deployed;
    let set = json(&gateway.nap(&["config", "set", &app, "FROM_HOST=1", "--json"], ""));
    let who = set["cause"]["key"].as_str().expect("a cause with a key").to_owned();
    assert!(who.starts_with("host:") && who.len() > 5, "the host recorded as {who:?}");
}
