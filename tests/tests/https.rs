//! HTTPS on nap's router: certificates added by hand and picked by SNI,
//! HTTP/2 by ALPN, plain HTTP forced over to HTTPS, and certificates ordered
//! over ACME from Let's Encrypt's own test server, pebble. Real openssl,
//! curl and pebble throughout.

use std::time::{Duration, Instant};

use nap_tests::tls::{Pebble, curl_https, https_answers, pem_bundle, self_signed};
use nap_tests::{AppKind, AppRepo, Gateway, free_port, raw, unique};

const DOMAIN: &str = "nap.test";

/// A gateway whose router answers under `nap.test` on HTTP and HTTPS
/// ports of its own; answers it with both addresses.
fn https_gateway(extra: &str) -> (Gateway, String, String) {
    let gateway = Gateway::builder().routed().settings(&format!("domain = \"{DOMAIN}\"\n{extra}")).start();
    let (http, https) = (gateway.http(), gateway.https());
    (gateway, http, https)
}

#[test]
fn certificates_are_picked_by_sni_speak_http2_and_can_force_https() {
    let (gateway, http, https) = https_gateway("");
    let admin = gateway.user("admin");
    let app = unique("tls");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let (own, www) = (format!("{app}.{DOMAIN}"), format!("www.{app}.test"));
    gateway.ssh(&admin, "nap", &["domains", "add", &app, &www]).assert_ok();
    let dir = tempfile::tempdir().expect("temp dir");
    let (own_cert, own_key) = self_signed(dir.path(), "own", &[&own]);
    let (www_cert, www_key) = self_signed(dir.path(), "www", &[&www]);

    let added = gateway.ssh_with_input(&admin, "nap", &["certs", "add", &app], &pem_bundle(&own_cert, &own_key));
    added.assert_ok();
    assert!(added.stdout.contains(&format!("{app} serves HTTPS for {own}")), "{}", added.stdout);
    gateway.ssh_with_input(&admin, "nap", &["certs", "add", &app], &pem_bundle(&www_cert, &www_key)).assert_ok();

    // Each host gets its own certificate (curl trusts only that one), over HTTP/2.
    let run = https_answers(&https, &own, &own_cert, "hello from web", &["--http2"]);
    assert!(run.ok() && run.stdout.ends_with("\n2 200"), "{run:?}");
    let run = https_answers(&https, &www, &www_cert, "hello from web", &["--http1.1"]);
    assert!(run.ok() && run.stdout.ends_with("\n1.1 200"), "{run:?}");
    let wrong = curl_https(&https, &www, "/", &own_cert, &[]);
    assert!(!wrong.ok(), "www's handshake must not verify with the other certificate: {wrong:?}");

    // `certs` lists hosts, issuers and expiry; no private key anywhere.
    let listed = gateway.ssh(&admin, "nap", &["certs", &app, "--json"]);
    listed.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    let hosts: Vec<&str> = json["certs"].as_array().expect("certs").iter().filter_map(|c| c["host"].as_str()).collect();
    assert_eq!(hosts, [own.as_str(), www.as_str()]);
    assert_eq!(json["certs"][0]["issuer"], own.as_str());
    let text = gateway.ssh(&admin, "nap", &["certs", &app]);
    assert!(text.stdout.contains("upload") && text.stdout.contains("days"), "{}", text.stdout);
    for output in [&listed.stdout, &text.stdout, &gateway.log()] {
        assert!(!output.contains("PRIVATE KEY"), "a private key leaked:\n{output}");
    }

    // Forced HTTPS: plain HTTP gets 308 to the same place over HTTPS.
    gateway.ssh(&admin, "nap", &["https", &app, "force"]).assert_ok();
    let https_port = https.rsplit_once(':').map(|(_, port)| port).expect("port");
    let location = format!("location: https://{own}:{https_port}/x?y=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, head, _) =
            raw(&http, &format!("GET /x?y=1 HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n")).expect("an answer");
        if status == 308 && head.to_ascii_lowercase().contains(&location) {
            break;
        }
        assert!(Instant::now() < deadline, "no redirect: {status} {head}");
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway.ssh(&admin, "nap", &["https", &app, "off"]).assert_ok();

    // Bad input is one line each, and nothing is stored.
    let refused = |input: &str, message: &str| {
        gateway.ssh_with_input(&admin, "nap", &["certs", "add", &app], input).assert_failed_with(message);
    };
    refused("not a certificate", "error: no certificate in the PEM input");
    refused(&std::fs::read_to_string(&own_cert).expect("cert"), "error: no private key in the PEM input");
    let mismatched = format!(
        "{}{}",
        std::fs::read_to_string(&own_cert).expect("cert"),
        std::fs::read_to_string(&www_key).expect("key")
    );
    refused(&mismatched, "error: the private key does not belong to the certificate");
    let (other_cert, other_key) = self_signed(dir.path(), "other", &["elsewhere.test"]);
    refused(&pem_bundle(&other_cert, &other_key), "error: the certificate covers elsewhere.test, none of which");

    // Removed, the host's handshake fails; the other host keeps its certificate.
    gateway.ssh(&admin, "nap", &["certs", "remove", &app, &www]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl_https(&https, &www, "/", &www_cert, &[]).ok() {
        assert!(Instant::now() < deadline, "{www} still served over HTTPS");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(curl_https(&https, &own, "/", &own_cert, &[]).ok());
    gateway
        .ssh(&admin, "nap", &["certs", "remove", &app, &www])
        .assert_failed_with(&format!("error: {app} has no certificate for {www}"));
}

#[test]
fn letsencrypt_orders_from_pebble_a_certificate_curl_verifies_and_a_failed_order_says_why() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port);
    let https = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = Gateway::builder().settings(&format!(
        "registry = \"{}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\nhttps_listen = \"{https}\"\ndomain = \"{DOMAIN}\"\n\
         acme_directory = \"{}\"\nacme_directory_ca = \"{}\"\nacme_email = \"ops@nap.test\"\n",
        nap_tests::REGISTRY,
        pebble.directory,
        pebble.directory_ca.display()
    )).start();
    let admin = gateway.user("admin");
    let app = unique("acme");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let own = format!("{app}.{DOMAIN}");

    // A host the CA cannot reach fails the order: the app stays on HTTP and says why.
    let unreachable = format!("down.{app}.test");
    gateway.ssh(&admin, "nap", &["domains", "add", &app, &unreachable]).assert_ok();
    pebble.resolve(&unreachable, "127.0.0.2");
    let failed = gateway.ssh(&admin, "nap", &["letsencrypt", &app, "on"]);
    assert_eq!(failed.code, Some(1), "{failed:?}\n{}", pebble.logs());
    assert!(failed.stderr.lines().any(|l| l.starts_with("error: ACME")), "{}", failed.stderr);
    let listed = gateway.ssh(&admin, "nap", &["certs", &app]);
    assert!(listed.stdout.contains("letsencrypt: on; the last order failed: ACME"), "{}", listed.stdout);
    assert!(
        gateway.log_until(|log| log.contains("ACME: no certificate")).contains("ACME: no certificate"),
        "the failure is logged"
    );
    let (status, _, _) =
        raw(&format!("127.0.0.1:{http_port}"), &format!("GET / HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"))
            .expect("an answer");
    assert_eq!(status, 200, "the app still answers on HTTP");

    // Without it, the order goes through; curl verifies the certificate with pebble's root.
    gateway.ssh(&admin, "nap", &["domains", "remove", &app, &unreachable]).assert_ok();
    let ordered = gateway.ssh(&admin, "nap", &["letsencrypt", &app, "on"]);
    assert!(ordered.ok(), "{ordered:?}\n{}", pebble.logs());
    assert!(ordered.stdout.contains(&format!("{app} serves HTTPS for {own}")), "{}", ordered.stdout);
    let root = pebble.issuing_root(dir.path());
    let run = https_answers(&https, &own, &root, "hello from web", &[]);
    assert!(run.ok() && run.stdout.ends_with(" 200"), "{run:?}");
    let listed: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&admin, "nap", &["certs", &app, "--json"]).assert_ok().stdout).expect("json");
    assert_eq!(listed["certs"][0]["source"], "letsencrypt");
    assert_eq!(listed["letsencrypt"]["last_error"], serde_json::Value::Null);
    assert!(!gateway.log().contains("PRIVATE KEY"), "a private key reached the log");

    let off = gateway.ssh(&admin, "nap", &["letsencrypt", &app, "off"]);
    assert!(off.ok() && off.stdout.contains("letsencrypt is off"), "{off:?}");
}
