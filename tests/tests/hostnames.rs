//! Hostnames belong to their apps: an app's key cannot take another app's
//! host, a host nap keeps for an app (made or not), or its TLS; the router
//! sends a request only to the app its host belongs to, over TLS only where
//! the connection's certificate covers it, and tells the app only what it
//! saw itself of the client. Real `nap serve`, curl, openssl, and an HTTP/2
//! client of the harness's (`nap_tests::http2`), since curl never sends a
//! `Host` beside `:authority`.

use std::time::{Duration, Instant};

use nap_tests::tls::{curl_https, https_answers, pem_bundle, self_signed, self_signed_leaf};
use nap_tests::{AppKind, AppRepo, Gateway, Key, PrivateEtcd, Run, get_host, http2, raw, unique};

/// Pushes a web app answering `body` as `app`.
fn web_app(gateway: &Gateway, admin: &Key, app: &str, body: &str) {
    let repo = AppRepo::new(AppKind::Web);
    repo.commit("index.html", &format!("{body}\n"));
    repo.push(gateway, admin, app, "master").assert_ok();
}

/// What answers at `host` on the router at `addr`: status and body, once
/// the route table has it (a status other than 404 and 503).
fn at(addr: &str, host: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_host(addr, host, "/").expect("the router answers");
        if !matches!(answer.0, 404 | 503) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run failed with exactly one line on stderr that holds `text`.
fn refused(run: &Run, text: &str) {
    run.assert_failed_with(text);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{run:?}");
}

#[test]
fn an_app_key_cannot_take_another_apps_host_or_its_certificate() {
    let gateway = Gateway::builder().routed().start();
    let (http, https) = (gateway.http(), gateway.https());
    let admin = gateway.user("admin");
    let (victim, own, later) = (unique("sec-b"), unique("sec-z"), unique("later"));
    web_app(&gateway, &admin, &victim, "victim b");
    web_app(&gateway, &admin, &own, "attacker z");
    // A key for its own app only, as the security review's was.
    let key = gateway.user_for("mallory", &[&own]);
    let victim_host = format!("{victim}.localhost");
    assert_eq!(at(&http, &victim_host), (200, "victim b\n".to_owned()));

    // The exact repro, and every name nap keeps for the victim.
    for host in [
        victim_host.clone(),
        format!("www.{victim_host}"),
        format!("*.{victim_host}"),
        format!("pr-1--{victim_host}"),
        format!("{}.", victim_host.to_uppercase()),
    ] {
        let run = gateway.ssh(&key, "nap", &["domains", "add", &own, &host]);
        refused(&run, &format!("is app {victim}'s own host"));
    }
    // Not even an admin gives one app's host to another.
    refused(&gateway.ssh(&admin, "nap", &["domains", "add", &own, &victim_host]), &format!("app {victim}'s own host"));
    // A name is kept for its app before the app exists.
    let later_host = format!("{later}.localhost");
    refused(&gateway.ssh(&key, "nap", &["domains", "add", &own, &later_host]), &format!("app {later}'s own host"));
    // Its own names are its to add.
    gateway.ssh(&key, "nap", &["domains", "add", &own, &format!("www.{own}.localhost")]).assert_ok();
    // New apps keep clear of preview hosts.
    refused(&gateway.ssh(&admin, "nap", &["apps", "create", "pr-1--x"]), "may not hold \"--\"");

    // Throughout, the victim's host is the victim's.
    assert_eq!(at(&http, &victim_host), (200, "victim b\n".to_owned()));
    let listed = gateway.ssh(&admin, "nap", &["domains", &victim]);
    assert_eq!(listed.assert_ok().stdout.trim(), format!("{victim_host} (nap's)"));

    // The victim's certificate, offered for the attacker's app, is refused
    // by name; the victim's own `certs add` is served.
    let dir = tempfile::tempdir().expect("temp dir");
    let (victim_cert, victim_key) = self_signed(dir.path(), "victim", &[&victim_host]);
    let offered = gateway.ssh_with_input(&key, "nap", &["certs", "add", &own], &pem_bundle(&victim_cert, &victim_key));
    refused(&offered, &format!("the certificate is for {victim_host}, which is app {victim}'s, not {own}'s"));
    let victim_pem = pem_bundle(&victim_cert, &victim_key);
    gateway.ssh_with_input(&admin, "nap", &["certs", "add", &victim], &victim_pem).assert_ok();
    let run = https_answers(&https, &victim_host, &victim_cert, "victim b", &[]);
    assert!(run.ok() && run.stdout.starts_with("victim b"), "{run:?}");

    // The app made later answers at the name kept for it: 503 with no
    // instance yet, never the attacker's page.
    gateway.ssh(&admin, "nap", &["apps", "create", &later]).assert_ok();
    gateway.track_app(&later);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&http, &later_host, "/").map(|(status, _)| status) != Some(503) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get_host(&http, &later_host, "/").map(|(status, _)| status), Some(503));
}

#[test]
fn wildcards_and_claims_give_each_host_to_one_app() {
    let gateway = Gateway::builder().routed().settings("domain = \"nap.test\"\n").start();
    let (http, _https) = (gateway.http(), gateway.https());
    let admin = gateway.user("admin");
    let (shop, other, catch_all) = (unique("shop"), unique("other"), unique("catch"));
    web_app(&gateway, &admin, &shop, "shop");
    web_app(&gateway, &admin, &other, "other");
    web_app(&gateway, &admin, &catch_all, "catch-all");
    let shop_key = gateway.user_for("shop-dev", &[&shop]);
    let other_key = gateway.user_for("other-dev", &[&other]);

    // Outside nap's domain a host is the first claimer's, and a claimed
    // wildcard covers the names one label under it.
    let zone = format!("{shop}.test");
    gateway.ssh(&shop_key, "nap", &["domains", "add", &shop, &format!("*.{zone}")]).assert_ok();
    let taken = gateway.ssh(&other_key, "nap", &["domains", "add", &other, &format!("*.{zone}")]);
    refused(&taken, &format!("*.{zone} belongs to app {shop}"));
    let under = gateway.ssh(&other_key, "nap", &["domains", "add", &other, &format!("www.{zone}")]);
    refused(&under, &format!("www.{zone} is under *.{zone}, which belongs to app {shop}"));
    gateway.ssh(&shop_key, "nap", &["domains", "add", &shop, &format!("www.{zone}")]).assert_ok();
    assert_eq!(at(&http, &format!("eu.{zone}")), (200, "shop\n".to_owned()));

    // nap's domain and its wildcard are an admin's to give; the wildcard
    // catches the names no app has, never an app's own.
    for host in ["*.nap.test", "nap.test"] {
        refused(&gateway.ssh(&other_key, "nap", &["domains", "add", &other, host]), "kept for nap's admins");
    }
    gateway.ssh(&admin, "nap", &["domains", "add", &catch_all, "*.nap.test"]).assert_ok();
    assert_eq!(at(&http, &format!("{}.nap.test", unique("nobody"))), (200, "catch-all\n".to_owned()));
    for app in [&shop, &other] {
        let body = if app == &shop { "shop\n" } else { "other\n" };
        assert_eq!(at(&http, &format!("{app}.nap.test")), (200, body.to_owned()), "{app}");
    }
}

#[test]
fn a_name_claimed_before_nap_kept_it_is_not_routed_and_its_app_takes_it_back() {
    let etcd = PrivateEtcd::start();
    let gateway =
        Gateway::builder().routed().settings(&format!("store = \"{}\"\ndomain = \"nap.test\"\n", etcd.url())).start();
    let (http, _https) = (gateway.http(), gateway.https());
    let admin = gateway.user("admin");
    let (victim, other) = (unique("victim"), unique("other"));
    web_app(&gateway, &admin, &victim, "victim");
    web_app(&gateway, &admin, &other, "other");
    let victim_key = gateway.user_for("victim-dev", &[&victim]);
    // What an older nap let an app key claim: a name below another app's
    // own host, and nap's wildcard.
    let (stolen, wildcard) = (format!("www.{victim}.nap.test"), "*.nap.test".to_owned());
    for host in [&stolen, &wildcard] {
        etcd.etcdctl(&["put", &format!("/nap/domains/{host}"), &other]).assert_ok();
        etcd.etcdctl(&["put", &format!("/nap/apps/{other}/domains/{host}"), ""]).assert_ok();
    }
    let nobody = format!("{}.nap.test", unique("nobody"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let routed_to_other = |host: &str| get_host(&http, host, "/").is_some_and(|(_, body)| body == "other\n");
    // Give the route table the change, then: neither name reaches `other`.
    gateway.ssh(&admin, "nap", &["domains", "add", &other, &format!("{other}.test")]).assert_ok();
    while get_host(&http, &format!("{other}.test"), "/").map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "the route table did not follow");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!routed_to_other(&stolen) && !routed_to_other(&nobody), "an old claim is routed");
    let listed = gateway.ssh(&admin, "nap", &["domains", &other]).assert_ok().stdout.clone();
    assert!(listed.contains(&format!("{stolen} (not routed: ")), "{listed}");
    assert!(listed.contains("*.nap.test (not routed: "), "{listed}");

    // The app the name is kept for takes it back, and is routed there.
    gateway.ssh(&victim_key, "nap", &["domains", "add", &victim, &stolen]).assert_ok();
    assert_eq!(at(&http, &stolen), (200, "victim\n".to_owned()));
    let left = etcd.etcdctl(&["get", "--keys-only", &format!("/nap/apps/{other}/domains/{stolen}")]);
    assert_eq!(left.assert_ok().stdout.trim(), "", "the old claim's key stays");
    // An admin gives the wildcard again: it is routed from then on.
    gateway.ssh(&admin, "nap", &["domains", "add", &other, &wildcard]).assert_ok();
    assert_eq!(at(&http, &nobody), (200, "other\n".to_owned()));
}

#[test]
fn tls_requests_go_only_where_the_certificate_reaches_and_clients_are_told_what_the_router_saw() {
    let gateway = Gateway::builder().routed().start();
    let (http, https) = (gateway.http(), gateway.https());
    let admin = gateway.user("admin");
    let (first, second) = (unique("tls-a"), unique("tls-b"));
    let upstream = AppRepo::new(AppKind::Upstream);
    upstream.push(&gateway, &admin, &first, "master").assert_ok();
    web_app(&gateway, &admin, &second, "second");
    let (first_host, second_host) = (format!("{first}.localhost"), format!("{second}.localhost"));
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_leaf(dir.path(), "first", &[&first_host]);
    gateway.ssh_with_input(&admin, "nap", &["certs", "add", &first], &pem_bundle(&cert, &key)).assert_ok();
    let run = https_answers(&https, &first_host, &cert, "hello from upstream", &[]);
    assert!(run.ok(), "{run:?}");

    // SNI of the first app, Host of the second: 421, over HTTP/1.1 and 2.
    for version in ["--http1.1", "--http2"] {
        let host_header = format!("Host: {second_host}");
        let misdirected = curl_https(&https, &first_host, "/", &cert, &[version, "-H", &host_header]);
        assert!(misdirected.stdout.ends_with(" 421"), "{version}: {misdirected:?}");
    }
    // HTTP/2 with `:authority` and `Host` that disagree: 421 too; two
    // `Host`s: 400.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (mut client, _connection) = http2::connect(&https, &first_host, &cert, None).await;
        let (own, other) = (first_host.as_str(), second_host.as_str());
        assert_eq!(http2::get_status(&mut client, own, &[("host", other)]).await, 421);
        assert_eq!(http2::get_status(&mut client, own, &[("host", own)]).await, 200, "both alike");
        assert_eq!(http2::get_status(&mut client, own, &[("host", own), ("host", other)]).await, 400, "two");
        assert_eq!(http2::get_status(&mut client, own, &[]).await, 200);
    });

    // The app is told the client's address, not what the client said of
    // itself: no client's X-Forwarded-For, Forwarded or X-Real-IP, nor
    // their spellings with `_`, which CGI and the like read as the same.
    let request = format!(
        "GET /headers HTTP/1.1\r\nHost: {first_host}\r\nX-Forwarded-For: 192.0.2.7\r\nForwarded: for=192.0.2.7\r\n\
         X-Real-IP: 192.0.2.7\r\nX_Real_IP: 192.0.2.7\r\nX_Forwarded_For: 192.0.2.7\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = raw(&http, &request).expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().any(|line| line == "x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(!body.contains("192.0.2.7"), "the client's word reached the app:\n{body}");
    let said = ["--http2", "-H", "X-Forwarded-For: 192.0.2.7", "-H", "X_Real_IP: 192.0.2.7"];
    let run = curl_https(&https, &first_host, "/headers", &cert, &said);
    assert!(run.stdout.lines().any(|line| line == "x-forwarded-for: 127.0.0.1"), "{run:?}");
    assert!(!run.stdout.contains("192.0.2.7"), "{run:?}");
}

#[test]
fn a_trusted_proxys_word_on_its_client_reaches_the_app() {
    let gateway = Gateway::builder().routed().settings("trusted_proxies = \"10.0.0.0/8, 127.0.0.1\"\n").start();
    let (http, _https) = (gateway.http(), gateway.https());
    let admin = gateway.user("admin");
    let app = unique("behind");
    AppRepo::new(AppKind::Upstream).push(&gateway, &admin, &app, "master").assert_ok();
    let request = format!(
        "GET /headers HTTP/1.1\r\nHost: {app}.localhost\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Real-IP: 192.0.2.7\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = raw(&http, &request).expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().any(|line| line == "x-forwarded-for: 192.0.2.7, 127.0.0.1"), "{body}");
    assert!(body.lines().any(|line| line == "x-real-ip: 192.0.2.7"), "{body}");
    let bad = gateway.nap(&["--trusted-proxies", "10.0.0.0/33", "version"], "");
    refused(&bad, "\"10.0.0.0/33\" is not an IP address or a CIDR network");
    assert!(bad.stderr.contains("--trusted-proxies"), "{bad:?}");
}
