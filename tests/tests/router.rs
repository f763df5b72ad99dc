//! nap's HTTP router: an app answers at `APP.DOMAIN` on the router, whichever
//! release serves it; unknown hosts and requests without a host get nap's
//! own short pages; `nap router` routes alone from the same store.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Gateway, Key, free_port, get_host, nap_bin, raw, unique};

const DOMAIN: &str = "nap.test";

/// A gateway whose router listens on a port of its own (`extra`: more
/// nap.toml lines); its router's address.
fn routed_gateway_with(extra: &str) -> (Gateway, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start_with_settings(&format!(
        "registry = \"{}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n{extra}",
        nap_tests::REGISTRY
    ));
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
    assert!(gateway.log().contains(&app), "an access-log line names the app:\n{}", gateway.log());
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
fn no_request_fails_through_pushes_config_changes_and_rollbacks() {
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
    repo.commit("index.html", "second\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    gateway.ssh(&admin, "nap", &["config", "set", &app, "GREETING=hi"]).assert_ok();
    gateway.ssh(&admin, "nap", &["rollback", &app, "v1"]).assert_ok();
    repo.commit("index.html", "third\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answers = polling.join().expect("poller");

    assert!(answers.len() > 50, "the client polled throughout: {} answers", answers.len());
    let failed = failures(&answers, &["hello from web", "second", "third"]);
    assert!(failed.is_empty(), "{} of {} requests failed, e.g. {:?}", failed.len(), answers.len(), failed.first());
    let last = answers.last().and_then(Option::as_ref).map(|(_, body)| body.trim().to_owned());
    assert_eq!(last.as_deref(), Some("third"), "once the switch is done, only the new release answers");
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

    gateway.ssh(&admin, "nap", &["domains", "remove", &app, &www]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&addr, &www, "/").map(|(status, _)| status) != Some(404) {
        assert!(Instant::now() < deadline, "{www} still routed after its removal");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Freed, the host can go to another app.
    gateway.ssh(&admin, "nap", &["domains", "add", &other, &www]).assert_ok();
}
