//! Process types (Procfile), the release phase, formation and `ps scale`,
//! app.json health checks, crashes and one-off `run`, on real dockerd,
//! ssh and nap's router.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nap_tests::{
    AppKind, AppRepo, Gateway, Key, Run, containers_of, docker, free_port, get_host, one_offs_of, raw, unique,
};

const DOMAIN: &str = "nap.test";
/// The fixture's Procfile, with the release phase given.
const PROCFILE: &str = "web: sh -c \"echo web $HOSTNAME on $PORT; exec httpd -f -vv -p $PORT -h /www\"\n\
worker: sh -c \"while true; do echo working on ${QUEUE:-default}; sleep 1; done\"\n";

/// A gateway whose router listens on its own port, with an admin key.
fn routed() -> (Gateway, Key, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n", nap_tests::REGISTRY))
        .start();
    let admin = gateway.user("admin");
    (gateway, admin, addr)
}

/// A gateway, an admin, the router's address, and the fixture's Procfile
/// app pushed as `APP`.
fn pushed() -> (Gateway, Key, String, String, AppRepo) {
    let (gateway, admin, addr) = routed();
    let app = unique("procs");
    let repo = AppRepo::new(AppKind::Procfile);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    (gateway, admin, addr, app, repo)
}

fn json(run: &Run) -> serde_json::Value {
    run.assert_ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The host names that answer `/cgi-bin/host` of `app` in `tries` requests.
fn hostnames(addr: &str, app: &str, tries: usize) -> BTreeSet<String> {
    let host = format!("{app}.{DOMAIN}");
    (0..tries).filter_map(|_| get_host(addr, &host, "/cgi-bin/host")).map(|(_, body)| body.trim().to_owned()).collect()
}

/// Polls `/` of `app` on the router until `stop`; answers every answer that
/// was not 200 "hello from procfile", and how many requests were made. An
/// answer cut short (its body shorter than its Content-Length) starts with
/// "cut: ".
fn poller(addr: &str, app: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, usize)> {
    let (addr, host, stop) = (addr.to_owned(), format!("{app}.{DOMAIN}"), Arc::clone(stop));
    let request = format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n");
    std::thread::spawn(move || {
        let (mut failures, mut total) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            total += 1;
            match raw(&addr, &request) {
                Some((200, _, body)) if body.trim() == "hello from procfile" => {}
                Some((status, head, body)) if content_length(&head).is_some_and(|length| body.len() < length) => {
                    failures.push(format!("cut: {status} {body:?}"));
                }
                other => failures.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (failures, total)
    })
}

/// The Content-Length an answer's head gives.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// Waits until `done` holds of `ps APP --json`, for at most `limit`.
fn until_ps(gateway: &Gateway, admin: &Key, app: &str, limit: Duration, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let ps = json(&gateway.ssh(admin, "nap", &["ps", app, "--json"]));
        if done(&ps) {
            return;
        }
        assert!(Instant::now() < deadline, "ps never got there: {ps:#}\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_release_phase_runs_first_then_web_and_worker_and_a_failing_one_changes_nothing() {
    let (gateway, admin, addr) = routed();
    let app = unique("procs");
    let repo = AppRepo::new(AppKind::Procfile);
    let push = repo.push(&gateway, &admin, &app, "master");
    push.assert_ok();
    let err = &push.stderr;
    let at = |text: &str| err.find(text).unwrap_or_else(|| panic!("no {text:?} in:\n{err}"));
    assert!(at("Release phase: sh -c") < at("migrated 3 tables"), "{err}");
    assert!(at("migrated 3 tables") < at(&format!("Starting nap-{app}-v1-web.1")), "the phase runs first: {err}");
    assert!(err.contains("(web=1 worker=1)"), "app.json's formation: {err}");
    assert_eq!(sorted(containers_of(&app)), [format!("nap-{app}-v1-web.1"), format!("nap-{app}-v1-worker.1")]);
    assert!(one_offs_of(&app).is_empty(), "the release phase's container is left: {:?}", one_offs_of(&app));

    // The worker runs without a port or a route; web answers.
    let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &format!("nap-{app}-v1-worker.1")]);
    assert!(!env.stdout.contains("\"PORT="), "a worker gets no PORT: {}", env.stdout);
    assert_eq!(hostnames(&addr, &app, 5), BTreeSet::from(["web-1".to_owned()]));
    let ps = json(&gateway.ssh(&admin, "nap", &["ps", &app, "--json"]));
    let rows = ps.as_array().expect("rows");
    let row = |name: &str| rows.iter().find(|r| r["instance"] == name).unwrap_or_else(|| panic!("{name}: {ps:#}"));
    assert_eq!(row("worker.1")["url"], serde_json::Value::Null, "{ps:#}");
    assert_eq!(row("web.1")["url"], format!("http://{app}.{DOMAIN}:{}/", addr.rsplit(':').next().unwrap_or_default()));
    assert_eq!(row("web.1")["restarts"], 0);
    let text = gateway.ssh(&admin, "nap", &["ps", &app]);
    assert!(text.assert_ok().stdout.lines().any(|l| l.starts_with("worker.1") && l.contains("v1")), "{}", text.stdout);

    // `logs` interleaves the instances, each line naming its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = gateway.ssh(&admin, "nap", &["logs", &app]);
        let out = &logs.assert_ok().stdout;
        if out.contains("app[worker.1]: working on default") && out.contains("app[web.1]: web web-1 on 5000") {
            break;
        }
        assert!(Instant::now() < deadline, "logs:\n{out}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // In time order: what Docker timestamped, merged (a prefix of it, as
    // the worker goes on writing).
    let shown = gateway.ssh(&admin, "nap", &["logs", &app]).stdout;
    let mut timed = Vec::new();
    for (name, container) in [("web.1", format!("nap-{app}-v1-web.1")), ("worker.1", format!("nap-{app}-v1-worker.1"))]
    {
        let logs = docker(&["logs", "-t", &container]);
        for line in logs.stdout.lines().chain(logs.stderr.lines()) {
            let (at, text) = line.split_once(' ').unwrap_or((line, ""));
            // RFC 3339 with its fraction padded to nanoseconds sorts as text.
            let (whole, fraction) = at.trim_end_matches('Z').split_once('.').unwrap_or((at, "0"));
            timed.push((format!("{whole}.{fraction:0<9}"), format!("app[{name}]: {text}")));
        }
    }
    timed.sort();
    let expected: Vec<&str> = timed.iter().map(|(_, line)| line.as_str()).collect();
    let shown: Vec<&str> = shown.lines().collect();
    assert!(shown.len() > 3 && expected.starts_with(&shown), "not in time order:\n{shown:#?}\n{expected:#?}");

    // A release phase that fails refuses the push, and v1 goes on.
    repo.commit("Procfile", &format!("{PROCFILE}release: sh -c \"echo migration failed >&2; exit 3\"\n"));
    let failed = repo.push(&gateway, &admin, &app, "master");
    assert!(!failed.ok(), "{failed:?}");
    assert!(failed.stderr.contains("the release phase exited with code 3"), "{}", failed.stderr);
    assert!(failed.stderr.contains("migration failed"), "its output: {}", failed.stderr);
    assert!(failed.stderr.contains(&format!("{app} keeps serving v1")), "{}", failed.stderr);
    assert_eq!(sorted(containers_of(&app)), [format!("nap-{app}-v1-web.1"), format!("nap-{app}-v1-worker.1")]);
    assert!(one_offs_of(&app).is_empty());
    assert_eq!(hostnames(&addr, &app, 3), BTreeSet::from(["web-1".to_owned()]), "v1 still serves");
    let releases = json(&gateway.ssh(&admin, "nap", &["releases", &app, "--json"]));
    assert_eq!(releases[0]["status"], "failed", "{releases:#}");
}

#[test]
fn ps_scale_spreads_requests_and_drains_without_a_failed_request() {
    let (gateway, admin, addr, app, _repo) = pushed();
    let scaled = gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=3"]);
    assert_eq!(scaled.assert_ok().stdout.trim(), format!("scaled {app}: web=3 worker=1"));
    assert_eq!(containers_of(&app).len(), 4, "{:?}", containers_of(&app));
    let seen = hostnames(&addr, &app, 60);
    assert_eq!(seen, ["web-1", "web-2", "web-3"].map(str::to_owned).into(), "three instances answer");

    // Down to one and back to three under load: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let load = poller(&addr, &app, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let down = gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=1"]);
    assert!(down.assert_ok().stderr.contains(&format!("Retired nap-{app}-v1-web.")), "{}", down.stderr);
    gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=3", "worker=0"]).assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (failures, total) = load.join().expect("poller");
    assert!(total > 50, "only {total} requests");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let webs: Vec<String> = containers_of(&app).into_iter().filter(|c| c.contains("-web.")).collect();
    assert_eq!(webs.len(), 3, "{webs:?}");
    assert!(!containers_of(&app).iter().any(|c| c.contains("worker")), "worker=0 stops it");

    // Malformed counts and unknown types: one line each, and nothing changes.
    for (args, error) in [
        (vec!["clock=1"], format!("error: clock is not a process type of {app}: its Procfile has web, worker")),
        (vec!["release=1"], format!("error: release is {app}'s release phase, run once per release")),
        (vec!["web=-1"], "error: invalid count \"-1\" for web".to_owned()),
        (vec!["web=100000"], "error: invalid count \"100000\" for web".to_owned()),
        (vec!["web"], "error: expected TYPE=COUNT, got \"web\"".to_owned()),
        (vec!["Web=1"], "error: invalid process type \"Web\"".to_owned()),
        (vec!["web=1", "web=2"], "error: web is scaled twice in one command".to_owned()),
    ] {
        let mut command = vec!["ps", "scale", app.as_str()];
        command.extend(args);
        let refused = gateway.ssh(&admin, "nap", &command);
        refused.assert_failed_with(&error);
        assert_eq!(refused.stderr.trim().lines().count(), 1, "{command:?}: {}", refused.stderr);
    }
    gateway.ssh(&admin, "nap", &["ps", "scale", "nosuchapp", "web=1"]).assert_failed_with("does not exist");
    assert_eq!(containers_of(&app).len(), 3, "refusals changed nothing");

    // The formation holds for later releases.
    let release = gateway.ssh(&admin, "nap", &["config", "set", &app, "GREETING=hi"]);
    assert!(release.assert_ok().stderr.contains("(web=3 worker=0)"), "{}", release.stderr);
    let names = sorted(containers_of(&app));
    assert_eq!(names, (1..=3).map(|i| format!("nap-{app}-v2-web.{i}")).collect::<Vec<_>>());
}

#[test]
fn a_killed_instance_costs_at_most_the_answer_it_was_writing_and_comes_back_counted() {
    let (gateway, admin, addr, app, _repo) = pushed();
    gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=2"]).assert_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let load = poller(&addr, &app, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let victim = format!("nap-{app}-v1-web.2");
    docker(&["kill", &victim]).assert_ok();
    until_ps(&gateway, &admin, &app, Duration::from_secs(30), |ps| {
        ps.as_array()
            .into_iter()
            .flatten()
            .any(|row| row["instance"] == "web.2" && row["state"] == "running" && row["restarts"].as_u64() >= Some(1))
    });
    // Back in rotation: it answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hostnames(&addr, &app, 10).contains("web-2") {
        assert!(Instant::now() < deadline, "web.2 is not routed again");
    }
    stop.store(true, Ordering::Relaxed);
    let (failures, total) = load.join().expect("poller");
    // SIGKILL may cut short the one answer the victim was writing (the poller
    // asks one at a time): no proxy can mend an answer already begun, and the
    // router ends it with the connection, so the client knows. Nothing else
    // may fail: a request the victim had not answered goes to web.1.
    let (cut, failed): (Vec<&String>, Vec<&String>) = failures.iter().partition(|f| f.starts_with("cut: "));
    assert!(
        failed.is_empty() && cut.len() <= 1,
        "{} of {total} GETs failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let text = gateway.ssh(&admin, "nap", &["ps", &app]);
    let line = text.stdout.lines().find(|l| l.starts_with("web.2")).unwrap_or_default().to_owned();
    assert!(line.split_whitespace().nth(3).is_some_and(|n| n != "0"), "RESTARTS is counted: {}", text.stdout);
}

#[test]
fn a_web_instance_without_the_checked_content_is_never_ready_and_the_deploy_is_refused() {
    let (gateway, admin, addr, app, repo) = pushed();
    repo.commit("health", "starting\n");
    let refused = repo.push(&gateway, &admin, &app, "master");
    assert!(!refused.ok(), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "nap-{app}-v2-web.1 failed its health check 3 times: GET /health answered 200 without \"ready\""
        )),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains(&format!("{app} keeps serving v1")), "{}", refused.stderr);
    assert_eq!(sorted(containers_of(&app)), [format!("nap-{app}-v1-web.1"), format!("nap-{app}-v1-worker.1")]);
    assert_eq!(hostnames(&addr, &app, 3), BTreeSet::from(["web-1".to_owned()]));

    // The router keeps checking: a live instance whose check starts failing
    // leaves the rotation, and comes back when it passes again.
    gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=2"]).assert_ok();
    let sick = format!("nap-{app}-v1-web.2");
    docker(&["exec", &sick, "sh", "-c", "echo sick > /www/health"]).assert_ok();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(hostnames(&addr, &app, 20), BTreeSet::from(["web-1".to_owned()]), "web.2 left within 2 s");
    docker(&["exec", &sick, "sh", "-c", "echo ready > /www/health"]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hostnames(&addr, &app, 10).contains("web-2") {
        assert!(Instant::now() < deadline, "web.2 did not come back");
    }
}

#[test]
fn malformed_procfiles_and_app_json_refuse_the_push_in_one_line() {
    let (gateway, admin, addr, app, repo) = pushed();
    for (file, text, error) in [
        ("Procfile", "web: ok\nnot a process line\n", " !     Procfile line 2: expected `type: command`"),
        ("Procfile", "web: echo 'open\n", " !     Procfile line 1: unbalanced quotes in the command"),
        ("Procfile", "Web!: x\n", " !     Procfile line 1: invalid process type \"Web!\""),
        (
            "app.json",
            "{\"formation\": {\"web\": {\"quantity\": 1000}}}",
            " !     app.json: formation.web.quantity is 1000",
        ),
        ("app.json", "{\"healthchecks\": ", " !     app.json: "),
        (
            "app.json",
            "{\"formation\": {\"clock\": {\"quantity\": 1}}}",
            " !     app.json: formation.clock: the Procfile has no clock",
        ),
    ] {
        let good = std::fs::read_to_string(repo.path.join(file)).expect(file);
        repo.commit(file, text);
        let refused = repo.push(&gateway, &admin, &app, "master");
        assert!(!refused.ok(), "{file}: {refused:?}");
        let said: Vec<&str> = refused.stderr.lines().filter(|l| l.contains(" !     ")).collect();
        assert_eq!(said.len(), 2, "the error and what keeps serving: {}", refused.stderr);
        assert!(said[0].contains(error), "{file} {text:?}: {}", refused.stderr);
        assert!(!refused.stderr.contains("Building"), "refused before the build: {}", refused.stderr);
        repo.commit(file, &good);
    }
    assert_eq!(hostnames(&addr, &app, 3), BTreeSet::from(["web-1".to_owned()]), "v1 still serves");
}

#[test]
fn run_streams_input_output_and_the_exit_code_and_leaves_nothing_behind() {
    let (gateway, admin, _addr, app, _repo) = pushed();
    // The exit code comes back; the command is words, never a shell's.
    let exit = gateway.ssh(&admin, "nap", &["run", &app, "--", "sh", "-c", "'echo out; echo err >&2; exit 3'"]);
    assert_eq!(exit.code, Some(3), "{exit:?}");
    assert_eq!(exit.stdout, "out\n");
    assert!(exit.stderr.contains("err"), "{exit:?}");
    let words = gateway.ssh(&admin, "nap", &["run", &app, "echo", "'$PORT;'", "x"]);
    assert_eq!(words.assert_ok().stdout, "$PORT; x\n", "no shell expands it");
    // The app's config is there.
    gateway.ssh(&admin, "nap", &["config", "set", &app, "--no-restart", "'GREETING=hello there'"]).assert_ok();
    let env = gateway.ssh(&admin, "nap", &["run", &app, "--", "env"]);
    assert!(env.assert_ok().stdout.contains("GREETING=hello there"), "{}", env.stdout);
    assert!(!env.stdout.contains("PORT="), "a one-off gets no PORT: {}", env.stdout);
    // Input is read.
    let cat = gateway.ssh_with_input(&admin, "nap", &["run", &app, "--", "cat"], "line one\nline two\n");
    assert_eq!(cat.assert_ok().stdout, "line one\nline two\n");
    // --type runs that type's command.
    let worker = gateway.ssh(&admin, "nap", &["run", &app, "--type", "clock"]);
    worker.assert_failed_with(&format!("error: clock is not a process type of {app}"));
    // A terminal with -t.
    let mut tty = gateway
        .ssh_command_with(&admin, "nap", &["-tt"], &["run", &app, "--", "sh", "-c", "'tty; stty size'"])
        .spawn()
        .expect("ssh -tt");
    drop(tty.stdin.take());
    let out = tty.wait_with_output().expect("ssh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "a pty: {text:?}");
    assert!(one_offs_of(&app).is_empty(), "{:?}", one_offs_of(&app));

    // A client killed mid-run leaves no container.
    let mut running = gateway.ssh_command(&admin, "nap", &["run", &app, "--", "sleep", "600"]).spawn().expect("ssh");
    let deadline = Instant::now() + Duration::from_secs(20);
    while one_offs_of(&app).is_empty() {
        assert!(Instant::now() < deadline, "the one-off never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    running.kill().expect("kill ssh");
    let _ = running.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !one_offs_of(&app).is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", one_offs_of(&app));
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another app's key may not.
    let name = unique("other");
    let other = gateway.user_for(&name, &["someotherapp"]);
    let refused = gateway.ssh(&other, "nap", &["run", &app, "--", "true"]);
    refused.assert_failed_with(&format!("error: key {name} may not use app {app}"));
    assert!(one_offs_of(&app).is_empty(), "a refused run starts nothing");
    let mut stdin_probe = gateway.ssh_command(&admin, "nap", &["run", &app]).spawn().expect("ssh");
    let _ = stdin_probe.stdin.take().map(|mut s| s.write_all(b""));
    let mut refused = String::new();
    let _ = stdin_probe.stderr.take().map(|mut e| e.read_to_string(&mut refused));
    let _ = stdin_probe.wait();
    assert!(refused.contains("run needs a command"), "{refused}");
}

#[test]
fn a_release_phase_over_release_timeout_is_stopped_and_the_release_refused() {
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\nrelease_timeout = 2\n",
            nap_tests::REGISTRY
        ))
        .start();
    let admin = gateway.user("admin");
    let app = unique("slowrel");
    let repo = AppRepo::new(AppKind::Procfile);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    repo.commit("Procfile", &format!("{PROCFILE}release: sh -c \"echo migrating forever; sleep 60\"\n"));
    let started = Instant::now();
    let refused = repo.push(&gateway, &admin, &app, "master");
    assert!(!refused.ok(), "{refused:?}");
    assert!(
        refused.stderr.contains("the release phase took longer than 2 s (release_timeout) and was stopped"),
        "{}",
        refused.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(40), "not waited out: {:?}", started.elapsed());
    assert!(one_offs_of(&app).is_empty(), "the release phase's container is left: {:?}", one_offs_of(&app));
    assert_eq!(hostnames(&addr, &app, 3), BTreeSet::from(["web-1".to_owned()]), "v1 still serves");
}
