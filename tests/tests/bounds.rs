//! Pushes and builds are bounded: what a push may send (`max_push_size`,
//! git's `receive.maxInputSize`) and hold unpacked, objects checked by git
//! (`receive.fsckObjects`), big files streamed to the build rather than
//! read whole, the build's time (`build_timeout`), and what an app's
//! instances may use (`limits set`). Each refusal is one line, and the
//! previous release keeps serving.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Deployed, Gateway, Key, Run, containers_of, docker, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// `nap serve` and every hook under it may map this much data: far less
/// than the big file below, so that reading it whole fails.
const DATA_CAP: u64 = 160 * MIB;
const BIG_FILE: u64 = 300 * MIB;

/// A gateway with `extra` settings under [`DATA_CAP`], and v1 of a web app.
fn serving(extra: &str) -> (Gateway, Key, String, AppRepo, String) {
    let Deployed { gateway, key: admin, app, repo, push } = Deployed::push(
        Gateway::builder()
            .settings(&format!("registry = \"{}\"\n{extra}", nap_tests::REGISTRY))
            .data_limit(DATA_CAP)
            .start(),
        AppKind::Web,
        "bounds",
    );
    let url = push.url().expect("url");
    (gateway, admin, app, repo, url)
}

/// The push was refused for `reason`, and v1 still serves, alone.
fn refused_and_v1_serves(gateway: &Gateway, admin: &Key, app: &str, url: &str, push: &Run, reason: &str) {
    push.assert_failed_with(reason);
    assert!(wait_for_body(url, "hello from web", ANSWER), "v1 stopped answering");
    assert_eq!(containers_of(app), vec![format!("nap-{app}-v1-web.1")], "a refused push left a container");
    // No lock is left: the next command that takes it runs.
    gateway.ssh(admin, "nap", &["config", "set", app, "AFTER=1", "--no-restart"]).assert_ok();
}

#[test]
fn a_big_file_streams_into_the_build_under_a_memory_cap() {
    let (gateway, admin, app, repo, _url) = serving("");
    repo.commit_zeros("big.bin", BIG_FILE);
    let push = repo.push(&gateway, &admin, &app, "master");
    push.assert_ok();
    assert!(push.stderr.contains("v2 is live"), "{}", push.stderr);
}

#[test]
fn a_blob_bomb_is_refused_in_one_line_under_a_memory_cap() {
    let (gateway, admin, app, repo, url) = serving("max_push_size = \"64m\"\n");
    repo.commit_zeros("bomb.bin", BIG_FILE);
    let push = repo.push(&gateway, &admin, &app, "master");
    let reason = "remote:  !     the pushed files take 300.0 MiB, over the limit of 64.0 MiB (max_push_size)";
    refused_and_v1_serves(&gateway, &admin, &app, &url, &push, reason);
}

/// Bytes that do not compress, from a fixed seed.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn a_push_over_max_push_size_and_a_malformed_object_are_refused_by_git() {
    let (gateway, admin, app, repo, url) = serving("max_push_size = \"1m\"\n");
    let before = gateway.branch_sha(&app, "master");

    std::fs::write(repo.path.join("noise.bin"), noise(2 << 20)).expect("write noise");
    repo.git_with_input(&["add", "noise.bin"], b"").assert_ok();
    repo.git_with_input(&["commit", "-q", "-m", "noise"], b"").assert_ok();
    let push = repo.push(&gateway, &admin, &app, "master");
    refused_and_v1_serves(&gateway, &admin, &app, &url, &push, "pack exceeds maximum allowed size");
    assert_eq!(gateway.branch_sha(&app, "master"), before, "the ref moved");

    // A commit whose author has no e-mail: git's own checks refuse it.
    repo.git_with_input(&["reset", "-q", "--hard", "HEAD~1"], b"").assert_ok();
    let tree = repo.git_with_input(&["rev-parse", "HEAD^{tree}"], b"").stdout.trim().to_owned();
    let object = format!(
        "tree {tree}\nparent {}\nauthor nobody 1700000000 +0000\ncommitter nobody 1700000000 +0000\n\nbad\n",
        repo.head()
    );
    let made = repo.git_with_input(&["hash-object", "-t", "commit", "--literally", "-w", "--stdin"], object.as_bytes());
    made.assert_ok();
    let push = repo.push(&gateway, &admin, &app, &format!("{}:refs/heads/master", made.stdout.trim()));
    refused_and_v1_serves(&gateway, &admin, &app, &url, &push, "missingEmail");
    assert_eq!(gateway.branch_sha(&app, "master"), before, "the ref moved");
}

#[test]
fn a_build_over_build_timeout_is_stopped_and_refused() {
    let (gateway, admin, app, repo, url) = serving("build_timeout = 5\n");
    repo.become_kind(AppKind::SlowBuild);
    let push = repo.push(&gateway, &admin, &app, "master");
    refused_and_v1_serves(
        &gateway,
        &admin,
        &app,
        &url,
        &push,
        "the build took longer than 5 s (build_timeout) and was stopped",
    );
    // Docker stopped the build's step too.
    let deadline = std::time::Instant::now() + ANSWER;
    loop {
        let steps = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]).stdout;
        if !steps.contains("building slowly") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the build's step still runs: {steps}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker inspect` of the app's one container: `{{json .HostConfig}}`.
fn host_config(app: &str) -> serde_json::Value {
    let containers = containers_of(app);
    let [container] = containers.as_slice() else { panic!("expected one container: {containers:?}") };
    let inspect = docker(&["inspect", "--format", "{{json .HostConfig}}", container]);
    inspect.assert_ok();
    serde_json::from_str(&inspect.stdout).expect("HostConfig JSON")
}

#[test]
fn limits_set_restarts_the_app_with_them_and_only_admins_change_them() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("limits");
    let dev = gateway.user_for("dev", &[&app]);
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    assert_eq!(host_config(&app)["Memory"], 0);

    let none = gateway.ssh(&dev, "nap", &["limits", &app]);
    none.assert_ok();
    assert!(none.stdout.contains("has no limits"), "{}", none.stdout);
    gateway
        .ssh(&dev, "nap", &["limits", "set", &app, "memory=64m"])
        .assert_failed_with("error: only admin keys may change limits");

    let set = gateway.ssh(&admin, "nap", &["limits", "set", &app, "memory=64m", "cpus=0.5", "pids=64"]);
    set.assert_ok();
    assert!(set.stdout.contains(&format!("{app} v2: limits set memory=64m cpus=0.5 pids=64")), "{}", set.stdout);
    let url = set.stdout.split("live at ").nth(1).expect("url").trim().to_owned();
    assert!(wait_for_body(&url, "hello from web", ANSWER));
    let config = host_config(&app);
    assert_eq!(config["Memory"], 64 * MIB);
    assert_eq!(config["MemorySwap"], 64 * MIB);
    assert_eq!(config["NanoCpus"], 500_000_000);
    assert_eq!(config["PidsLimit"], 64);
    let shown: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&dev, "nap", &["limits", &app, "--json"]).stdout).expect("JSON");
    assert_eq!(shown, serde_json::json!({"memory": "64m", "cpus": "0.5", "pids": 64}));

    // The next push keeps them; unset drops one.
    repo.commit("index.html", "hello again\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    assert_eq!(host_config(&app)["PidsLimit"], 64);
    let unset = gateway.ssh(&admin, "nap", &["limits", "unset", &app, "pids"]);
    unset.assert_ok();
    assert!(unset.stdout.contains("v4: limits unset pids"), "{}", unset.stdout);
    let config = host_config(&app);
    assert!(config["PidsLimit"].is_null() || config["PidsLimit"] == 0, "{config}");
    assert_eq!(config["Memory"], 64 * MIB);

    // Bad input changes nothing.
    for (args, error) in [
        (vec!["limits", "set", &app, "memory=1m"], "error: memory=1m is too little: Docker needs at least 6m"),
        (vec!["limits", "set", &app, "disk=1g"], "error: unknown limit \"disk\": nap knows memory, cpus and pids"),
        (vec!["limits", "set", &app, "cpus=lots"], "error: invalid CPU count \"lots\""),
        (vec!["limits", "set", &app, "memory"], "error: malformed limit \"memory\""),
        (vec!["limits", "unset", &app, "pids"], &format!("error: pids is not limited for {app}")),
        (vec!["limits", "set", "nosuchapp", "pids=1"], "error: app nosuchapp does not exist"),
    ] {
        let run = gateway.ssh(&admin, "nap", &args);
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(error), "{args:?}: {:?}", run.stderr);
    }
    let releases: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&admin, "nap", &["releases", &app, "--json"]).stdout).expect("JSON");
    assert_eq!(releases.as_array().map(Vec::len), Some(4), "a refused command made a release");
}
