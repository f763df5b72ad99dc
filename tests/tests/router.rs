//! nap's HTTP router: an app answers at `APP.DOMAIN` on the router, whichever
//! release serves it; unknown hosts and requests without a host get nap's
//! own short pages; `nap router` routes alone from the same store.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Gateway, Key, WsClient, download, free_port, get_host, nap_bin, raw, unique};

const DOMAIN: &str = "nap.test";

/// A gateway whose router listens on a port of its own (`extra`: more
/// nap.toml lines); its router's address.
fn routed_gateway_with(extra: &str) -> (Gateway, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n{extra}",
            nap_tests::REGISTRY
        ))
        .start();
    (gateway, addr)
}

fn routed_gateway() -> (Gateway, String) {
    routed_gateway_with("")
}

/// An admin key added through `gateway`.
fn admin_of(gateway: &Gateway) -> Key {
    let admin = Key::generate();
    let name = unique("admin");
    gateway.nap(&["keys", "add", &name, "--admin"], &admin.public_text()).assert_ok();
    gateway.track_key(&name);
    admin
}

/// A client that polls `host` on the router at `addr` until `stop`
/// (at most 20,000 requests or 2 minutes); every answer, in order.
fn poller(addr: &str, host: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Option<(u16, String)>>> {
    let (addr, host, stop) = (addr.to_owned(), host.to_owned(), Arc::clone(stop));
    std::thread::spawn(move || {
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && answers.len() < 20_000 && Instant::now() < deadline {
            answers.push(get_host(&addr, &host, "/"));
            std::thread::sleep(Duration::from_millis(5));
        }
        answers
    })
}

/// The answers that are not 200 with one of `bodies`.
fn failures<'a>(answers: &'a [Option<(u16, String)>], bodies: &[&str]) -> Vec<&'a Option<(u16, String)>> {
    answers
        .iter()
        .filter(|answer| !answer.as_ref().is_some_and(|(status, body)| *status == 200 && bodies.contains(&body.trim())))
        .collect()
}

/// Waits until `host` on the router at `addr` answers 200 with `body`.
fn routed_body(addr: &str, host: &str, body: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if get_host(addr, host, "/").is_some_and(|(status, got)| status == 200 && got.trim() == body) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn an_app_answers_at_its_host_on_the_router_across_releases() {
    let (gateway, addr) = routed_gateway();
    let admin = admin_of(&gateway);
    let app = unique("routed");
    let host = format!("{app}.{DOMAIN}");
    let repo = AppRepo::new(AppKind::Web);
    let pushed = repo.push(&gateway, &admin, &app, "master");
    let port = addr.rsplit_once(':').map(|(_, port)| port).expect("a port");
    let url = format!("http://{host}:{port}/");
    assert_eq!(pushed.assert_ok().url().as_deref(), Some(url.as_str()), "the push prints the app's address");
    // Once the push says so, the router routes it: the first request answers.
    let (status, body) = get_host(&addr, &host, "/").expect("an answer");
    assert_eq!((status, body.trim()), (200, "hello from web"), "the first request after the first push");
    assert!(routed_body(&addr, &host, "hello from web"), "v1 through the router at {addr}");
    // The Host header may carry a port, and any case.
    let (status, _) = get_host(&addr, &format!("{}:80", host.to_uppercase()), "/").expect("an answer");
    assert_eq!(status, 200);

    repo.commit("index.html", "v2 here\n");
    let pushed = repo.push(&gateway, &admin, &app, "master");
    assert_eq!(pushed.assert_ok().url().as_deref(), Some(url.as_str()), "the address stays");
    assert!(routed_body(&addr, &host, "v2 here"), "the same address serves v2");
    for command in [vec!["config", "set", &app, "GREETING=hi", "--json"], vec!["rollback", &app, "v1", "--json"]] {
        let answer: serde_json::Value =
            serde_json::from_str(&gateway.ssh(&admin, "nap", &command).assert_ok().stdout).expect("json");
        assert_eq!(answer["url"].as_str(), Some(url.as_str()), "{command:?} keeps the address");
    }
    assert!(routed_body(&addr, &host, "hello from web"), "the rollback to v1 serves at the same address");
    let restarted = gateway.ssh(&admin, "nap", &["restart", &app]);
    assert!(restarted.assert_ok().stdout.trim_end().ends_with(&format!("live at {url}")), "{}", restarted.stdout);

    // A host nap does not know, and a request with no host at all.
    let (status, head, body) =
        raw(&addr, "GET / HTTP/1.0\r\nHost: nobody.nap.test\r\nX-Request-Id: probe-1\r\n\r\n").expect("an answer");
    assert_eq!(status, 404, "{head}\n{body}");
    assert!(body.contains("nap: no app answers at nobody.nap.test"), "{body}");
    assert!(head.to_ascii_lowercase().contains("x-request-id: probe-1"), "the client's request id comes back: {head}");
    let (status, _, body) = raw(&addr, "GET / HTTP/1.0\r\n\r\n").expect("an answer");
    assert_eq!(status, 400, "{body}");
    // Headers larger than 32 KiB are refused, and the router goes on serving.
    let huge = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(40_000));
    let refused = raw(&addr, &huge);
    assert_eq!(refused.map(|(status, _, _)| status), Some(431));
    assert_eq!(get_host(&addr, &host, "/").map(|(status, _)| status), Some(200));
    // The router logs a line per request, naming the app.
    let log = gateway.log_until(|log| log.contains(&app));
    assert!(log.contains(&app), "an access-log line names the app:\n{log}");
}

#[test]
fn nap_router_alone_routes_from_the_same_store() {
    let (gateway, _) = routed_gateway();
    let admin = admin_of(&gateway);
    let app = unique("alone");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();

    let addr = format!("127.0.0.1:{}", free_port());
    let mut alone = std::process::Command::new(nap_bin())
        .arg("--config")
        .arg(gateway.config_path())
        .args(["router", "--http-listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nap router");
    let routed = routed_body(&addr, &format!("{app}.{DOMAIN}"), "hello from web");
    let _ = alone.kill();
    let _ = alone.wait();
    assert!(routed, "nap router routes the app from the gateway's store");

    let off = gateway.nap(&["router", "--http-listen", "off"], "");
    off.assert_failed_with("error: the router is off");
}

#[test]
fn no_request_fails_through_five_rounds_of_push_config_rollback_and_restart() {
    let (gateway, addr) = routed_gateway();
    let admin = admin_of(&gateway);
    let app = unique("steady");
    let host = format!("{app}.{DOMAIN}");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    assert!(routed_body(&addr, &host, "hello from web"));

    // A client polls the app's address while releases change under it.
    let stop = Arc::new(AtomicBool::new(false));
    let polling = poller(&addr, &host, &stop);
    let mut bodies = vec!["hello from web".to_owned()];
    for round in 1..=5 {
        let body = format!("round {round}");
        repo.commit("index.html", &format!("{body}\n"));
        repo.push(&gateway, &admin, &app, "master").assert_ok();
        bodies.push(body);
        gateway.ssh(&admin, "nap", &["config", "set", &app, &format!("ROUND={round}")]).assert_ok();
        gateway.ssh(&admin, "nap", &["rollback", &app]).assert_ok();
        gateway.ssh(&admin, "nap", &["restart", &app]).assert_ok();
    }
    repo.commit("index.html", "last\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    bodies.push("last".to_owned());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answers = polling.join().expect("poller");

    assert!(answers.len() > 500, "the client polled throughout: {} answers", answers.len());
    let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let failed = failures(&answers, &bodies);
    let why: Vec<String> =
        gateway.log().lines().filter(|l| l.contains("upstream refused")).map(str::to_owned).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}; the router says:\n{}",
        failed.len(),
        answers.len(),
        failed.first(),
        why.join("\n")
    );
    let last = answers.last().and_then(Option::as_ref).map(|(_, body)| body.trim().to_owned());
    assert_eq!(last.as_deref(), Some("last"), "once the switch is done, only the new release answers");
}

#[test]
fn a_long_download_and_a_websocket_outlive_the_deploy_that_replaces_them() {
    let (gateway, addr) = routed_gateway_with("retire_timeout = 8\n");
    let admin = admin_of(&gateway);
    let app = unique("longlived");
    let host = format!("{app}.{DOMAIN}");
    let repo = AppRepo::new(AppKind::Upstream);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    assert!(routed_body(&addr, &host, "hello from upstream"));

    let mut old = WsClient::connect(&addr, &host, "/ws").expect("a WebSocket through the router");
    assert_eq!(old.send_text("a").as_deref(), Some("hello from upstream: a"));
    // About 6 s: 20 MB in 64 KiB chunks, 20 ms apart.
    let downloading = {
        let (addr, host) = (addr.clone(), host.clone());
        std::thread::spawn(move || download(&addr, &host, "/download?bytes=20000000&chunk=65536&delay_ms=20"))
    };
    std::thread::sleep(Duration::from_millis(300));
    repo.commit("reply", "v2\n");
    let pushed = repo.push(&gateway, &admin, &app, "master");
    pushed.assert_ok();
    assert!(pushed.stderr.contains("Draining the previous instances"), "{}", pushed.stderr);

    // New connections reach v2; the old WebSocket is still on v1 until retire_timeout.
    assert!(routed_body(&addr, &host, "v2"));
    let mut new = WsClient::connect(&addr, &host, "/ws").expect("a new WebSocket");
    assert_eq!(new.send_text("b").as_deref(), Some("v2: b"));
    assert_eq!(downloading.join().expect("download"), Some((200, 20_000_000)), "the download finished whole");
    new.close();
    // The push retired v1 once its WebSocket outlived retire_timeout: it is closed now.
    assert_eq!(old.send_text("c"), None, "v1's WebSocket outlived its release");
}

#[test]
fn failures_get_their_status_and_log_line_and_the_router_keeps_serving() {
    let (gateway, addr) = routed_gateway_with("upstream_timeout = 4\n");
    let admin = admin_of(&gateway);
    let (app, stuck) = (unique("healthy"), unique("stuck"));
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    AppRepo::new(AppKind::Upstream).push(&gateway, &admin, &stuck, "master").assert_ok();
    let (host, stuck_host) = (format!("{app}.{DOMAIN}"), format!("{stuck}.{DOMAIN}"));
    assert!(routed_body(&addr, &host, "hello from web") && routed_body(&addr, &stuck_host, "hello from upstream"));
    let healthy = || assert_eq!(get_host(&addr, &host, "/").map(|(s, _)| s), Some(200), "the other app still answers");
    let logged = |status: u16, what: &str| {
        let is_it = |l: &str| l.contains("nap::access") && l.contains(&format!("status={status}"));
        let log = gateway.log_until(|log| log.lines().any(is_it));
        let line = log.lines().find(|l| is_it(l));
        assert!(line.is_some(), "no access-log line for {what} ({status}):\n{log}");
    };
    let ask = |host: &str, path: &str| {
        raw(&addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).expect("an answer")
    };

    // What the app is told of the client (the Host in capitals, with a port;
    // the client's own X-Forwarded-For is replaced, as no proxy is trusted).
    let port = addr.rsplit_once(':').map(|(_, port)| port).expect("a port");
    let request = format!(
        "GET /headers HTTP/1.1\r\nHost: {}:{port}\r\nX-Forwarded-For: 192.0.2.7\r\nConnection: close\r\n\r\n",
        stuck_host.to_uppercase()
    );
    let (status, _, body) = raw(&addr, &request).expect("an answer");
    assert_eq!(status, 200, "{body}");
    let told = format!(
        "x-forwarded-for: 127.0.0.1\nx-forwarded-proto: http\nx-forwarded-host: {stuck_host}\nx-forwarded-port: {port}"
    );
    for line in told.lines() {
        assert!(body.lines().any(|l| l == line), "the app is not told {line:?}:\n{body}");
    }
    assert!(body.lines().any(|l| l.starts_with("x-request-id: ") && l.len() == 14 + 32), "a new request id:\n{body}");

    // A malformed Host.
    for bad in ["bad_host!", "a..b"] {
        let (status, _, body) = ask(bad, "/");
        assert_eq!(status, 400, "{bad}: {body}");
    }
    logged(400, "a malformed host");
    // An app with a host but no instance.
    let idle = unique("idle");
    gateway.ssh(&admin, "nap", &["apps", "create", &idle]).assert_ok();
    gateway.track_app(&idle);
    gateway.ssh(&admin, "nap", &["domains", "add", &idle, &format!("{idle}.test")]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&addr, &format!("{idle}.test"), "/").map(|(s, _)| s) != Some(503) {
        assert!(Instant::now() < deadline, "no 503 for an app without instances");
        std::thread::sleep(Duration::from_millis(50));
    }
    logged(503, "no instance");
    healthy();

    // An upstream that hangs up: 502; one that does not answer in time: 504.
    let (status, _, body) = ask(&stuck_host, "/hangup");
    assert_eq!(status, 502, "{body}");
    logged(502, "an upstream that hung up");
    let (status, _, body) = ask(&stuck_host, "/sleep?ms=6000");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("took too long"), "{body}");
    logged(504, "a timeout");
    healthy();

    // An instance that dies leaves the routes at once (503, not a wait on a
    // dead address), and comes back at the same address when it starts again.
    let container = format!("nap-{stuck}-v1-web.1");
    nap_tests::docker(&["stop", "--time", "1", &container]).assert_ok();
    // (A request that raced the unpublishing may still wait out the 4 s timeout.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&addr, &stuck_host, "/").map(|(s, _)| s) != Some(503) {
        assert!(Instant::now() < deadline, "a dead instance is still routed:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = gateway.log_until(|log| log.contains("a routed instance died; unpublished"));
    assert!(log.contains("a routed instance died; unpublished"), "{log}");
    nap_tests::docker(&["start", &container]).assert_ok();
    assert!(routed_body(&addr, &stuck_host, "hello from upstream"), "the instance came back");
    healthy();

    // A slow-loris client that never finishes its headers is closed after 10 s.
    let mut slow = nap_tests::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    std::io::Write::write_all(&mut slow, b"GET / HTTP/1.1\r\nHost: x\r\n").expect("write");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut rest);
    assert!(started.elapsed() < Duration::from_secs(14), "the slow client was not cut off");
    assert!(
        gateway.log_until(|log| log.contains("no complete request head")).contains("no complete request head"),
        "the cut is logged"
    );
    healthy();
}

#[test]
fn two_routers_on_one_etcd_route_alike_with_no_failed_request_through_either() {
    let shared = format!("store = \"etcd://{}\"\n", nap_tests::etcd_endpoint());
    let (a, a_addr) = routed_gateway_with(&format!("host_name = \"host-a\"\n{shared}"));
    let (b, b_addr) = routed_gateway_with(&format!("host_name = \"host-b\"\n{shared}"));
    let admin = admin_of(&a);
    let app = unique("twice");
    let host = format!("{app}.{DOMAIN}");
    b.track_app(&app);
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&a, &admin, &app, "master").assert_ok();
    assert!(routed_body(&a_addr, &host, "hello from web") && routed_body(&b_addr, &host, "hello from web"));

    let stop = Arc::new(AtomicBool::new(false));
    let pollers = [poller(&a_addr, &host, &stop), poller(&b_addr, &host, &stop)];
    // A push to either host switches both routers.
    repo.commit("index.html", "from a\n");
    repo.push(&a, &admin, &app, "master").assert_ok();
    repo.commit("index.html", "from b\n");
    repo.push(&b, &admin, &app, "master").assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for (router, poller) in ["a", "b"].into_iter().zip(pollers) {
        let answers = poller.join().expect("poller");
        let failed = failures(&answers, &["hello from web", "from a", "from b"]).len();
        assert_eq!(failed, 0, "router {router}: {failed} of {} requests failed", answers.len());
        let last = answers.last().and_then(Option::as_ref).map(|(_, body)| body.trim().to_owned());
        assert_eq!(last.as_deref(), Some("from b"), "router {router} routes the newest release");
    }
}

#[test]
fn custom_hosts_and_wildcards_route_to_one_app_each() {
    let (gateway, addr) = routed_gateway();
    let admin = admin_of(&gateway);
    let app = unique("hosted");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let (www, wild) = (format!("www.{app}.test"), format!("*.{app}.example"));
    gateway.ssh(&admin, "nap", &["domains", "add", &app, &www]).assert_ok();
    gateway.ssh(&admin, "nap", &["domains", "add", &app, &wild.to_uppercase()]).assert_ok();
    assert!(routed_body(&addr, &www, "hello from web"), "an exact host");
    assert!(routed_body(&addr, &format!("eu.{app}.example"), "hello from web"), "a wildcard host");
    assert_eq!(get_host(&addr, &format!("a.b.{app}.example"), "/").map(|(status, _)| status), Some(404));
    // A fully qualified host (a trailing dot) is the same host.
    assert!(routed_body(&addr, &format!("{www}."), "hello from web"), "a trailing dot");
    // An absolute target names the host, whatever Host says (RFC 9112 3.2.2).
    let request = format!("GET http://{www}/ HTTP/1.1\r\nHost: nobody.nap.test\r\nConnection: close\r\n\r\n");
    let (status, _, body) = raw(&addr, &request).expect("an answer");
    assert_eq!((status, body.trim()), (200, "hello from web"), "absolute form");

    let listed: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&admin, "nap", &["domains", &app, "--json"]).assert_ok().stdout)
            .expect("json");
    assert_eq!(listed["domains"], serde_json::json!([wild, www]));

    // A host belongs to one app; a malformed one is one line.
    let other = unique("other");
    gateway.ssh(&admin, "nap", &["apps", "create", &other]).assert_ok();
    gateway.track_app(&other);
    gateway
        .ssh(&admin, "nap", &["domains", "add", &other, &www])
        .assert_failed_with(&format!("error: {www} belongs to app {app}; remove it there first"));
    gateway.ssh(&admin, "nap", &["domains", "add", &app, "bad_host.test"]).assert_failed_with("error: invalid host");
    gateway
        .ssh(&admin, "nap", &["domains", "add", &app, "192.0.2.7"])
        .assert_failed_with("error: 192.0.2.7 is an IP address: the router routes by name");

    gateway.ssh(&admin, "nap", &["domains", "remove", &app, &www]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&addr, &www, "/").map(|(status, _)| status) != Some(404) {
        assert!(Instant::now() < deadline, "{www} still routed after its removal");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Freed, the host can go to another app.
    gateway.ssh(&admin, "nap", &["domains", "add", &other, &www]).assert_ok();
}

#[test]
fn the_router_counts_requests_for_prometheus_and_keeps_each_apps_access_log() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let (gateway, addr) = routed_gateway_with(&format!("metrics_listen = \"{metrics}\"\n"));
    let admin = admin_of(&gateway);
    let app = unique("counted");
    let host = format!("{app}.{DOMAIN}");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    assert!(routed_body(&addr, &host, "hello from web"));
    for path in ["/one", "/two?token=secret"] {
        get_host(&addr, &host, path).expect("an answer");
    }

    let (status, head, body) =
        raw(&metrics, &format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"))
            .expect("metrics");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text");
    for expected in [
        format!("nap_router_requests_total{{app=\"{app}\",status=\"2xx\"}}"),
        format!("nap_router_requests_total{{app=\"{app}\",status=\"4xx\"}}"),
        format!("nap_router_request_duration_seconds_bucket{{le=\"0.001\",app=\"{app}\"}}"),
        "nap_router_open_connections".to_owned(),
    ] {
        assert!(body.contains(&expected), "no {expected} in:\n{body}");
    }

    let logs = gateway.ssh(&admin, "nap", &["logs", &app, "--router", "--tail", "2"]);
    logs.assert_ok();
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", logs.stdout);
    assert!(lines[0].contains(&format!("{host} GET /one 404")), "{}", lines[0]);
    assert!(lines[1].contains("GET /two ") && !lines[1].contains("secret"), "no query in the log: {}", lines[1]);
    // A nap process that routes nothing says so.
    gateway.nap(&["logs", &app, "--router"], "").assert_failed_with("error: no router runs in this nap process");
}

/// Reads from `stream` until what it read holds `until` (or it closes, or
/// 10 s pass); everything read.
fn read_answers(stream: &mut std::net::TcpStream, until: &str) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let (mut got, deadline) = (Vec::new(), Instant::now() + Duration::from_secs(10));
    let mut buf = [0u8; 16384];
    while !String::from_utf8_lossy(&got).contains(until) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn http1_bodies_chunks_pipelines_and_ambiguous_lengths_go_through_as_they_should() {
    use std::io::Write;
    let (gateway, addr) = routed_gateway();
    let admin = admin_of(&gateway);
    let app = unique("bodies");
    AppRepo::new(AppKind::Upstream).push(&gateway, &admin, &app, "master").assert_ok();
    let host = format!("{app}.{DOMAIN}");
    assert!(routed_body(&addr, &host, "hello from upstream"));

    // A body with a length, and a chunked one, reach the app whole.
    let (status, _, body) = raw(
        &addr,
        &format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
    )
    .expect("an answer");
    assert_eq!((status, body.as_str()), (200, "hello"));
    let chunked = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (status, head, body) = raw(
        &addr,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"
        ),
    )
    .expect("an answer");
    assert_eq!((status, body.as_str()), (200, "hello world"), "{head}");

    // A body of 4 MiB goes through in both directions, streamed.
    let big = "y".repeat(4 << 20);
    let (status, _, body) = raw(
        &addr,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    )
    .expect("an answer");
    assert_eq!((status, body.len()), (200, big.len()));

    // A chunked answer: relayed in chunks to HTTP/1.1, taken out of them for HTTP/1.0.
    let (status, head, body) =
        raw(&addr, &format!("GET /chunked?n=3 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
            .expect("an answer");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert!(body.contains("part 1\n") && body.ends_with("0\r\n\r\n"), "{body:?}");
    let (status, head, body) =
        raw(&addr, &format!("GET /chunked?n=3 HTTP/1.0\r\nHost: {host}\r\n\r\n")).expect("an answer");
    assert_eq!((status, body.as_str()), (200, "part 1\npart 2\npart 3\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");

    // Two requests in one write (pipelined) get two answers, in order.
    let mut stream = nap_tests::connect(&addr).expect("connect");
    let two = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\nGET /sleep?ms=1 HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(two.as_bytes()).expect("write");
    let answers = read_answers(&mut stream, "slept 1");
    let first = answers.find("hello from upstream").expect("the first answer");
    assert!(answers.find("slept 1").is_some_and(|second| second > first), "{answers}");

    // Expect: 100-continue gets 100 from the router, then the body goes.
    let mut stream = nap_tests::connect(&addr).expect("connect");
    let head = format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    assert!(read_answers(&mut stream, "100 Continue").starts_with("HTTP/1.1 100 Continue\r\n\r\n"));
    stream.write_all(b"abc").expect("write");
    assert!(read_answers(&mut stream, "abc").ends_with("\r\n\r\nabc"));

    // Lengths the router and the app could read differently are refused (400),
    // and the connection is not used again.
    let smuggled = format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /headers HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let (status, head, body) = raw(&addr, &smuggled).expect("an answer");
    assert_eq!(status, 400, "{head}\n{body}");
    assert!(!body.contains("x-forwarded-for"), "the smuggled request reached the app: {body}");
    let two_lengths =
        format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(raw(&addr, &two_lengths).map(|(status, _, _)| status), Some(400));
    let gzip = format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(raw(&addr, &gzip).map(|(status, _, _)| status), Some(501));
    let (status, _, body) = raw(&addr, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").expect("an answer");
    assert_eq!(status, 400, "two hosts: {body}");
    assert_eq!(get_host(&addr, &host, "/").map(|(status, _)| status), Some(200), "the router goes on serving");
}
