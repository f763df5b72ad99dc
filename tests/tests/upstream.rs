//! The router tests' own app, `nap-test-upstream` (tests/upstream), proved
//! without nap: the `upstream` fixture repo built with plain `docker build`
//! and run on the default bridge, then asked directly for what the router
//! tests rely on (keep-alive, long downloads, WebSockets, headers, a clean
//! stop on SIGTERM that lets requests in flight finish).

use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Cleanup, KeepAlive, Run, WsClient, docker, download, raw, unique};

/// Runs the fixture's image as `name`; answers its `IP:5000` once it listens.
fn run_upstream(cleanup: &Cleanup, name: &str) -> String {
    let repo = AppRepo::new(AppKind::Upstream);
    let image = format!("nap-test-upstream:{}", unique("t"));
    cleanup.images(&image);
    let built: Run = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(&repo.path)
        .output()
        .expect("docker build")
        .into();
    built.assert_ok();
    cleanup.container(name);
    docker(&["run", "-d", "--rm", "--name", name, "-e", "PORT=5000", &image]).assert_ok();
    let ip = docker(&["inspect", "--format", "{{.NetworkSettings.Networks.bridge.IPAddress}}", name]);
    let addr = format!("{}:5000", ip.assert_ok().stdout.trim());
    let deadline = Instant::now() + Duration::from_secs(10);
    while KeepAlive::connect(&addr, "upstream").is_none() {
        assert!(Instant::now() < deadline, "{name} does not listen\n{}", docker(&["logs", name]).stderr);
        std::thread::sleep(Duration::from_millis(50));
    }
    addr
}

#[test]
fn the_upstream_app_keeps_alive_streams_echoes_websockets_and_stops_on_sigterm() {
    let cleanup = Cleanup::new();
    let name = unique("nap-upstream");
    let addr = run_upstream(&cleanup, &name);
    assert_eq!(docker(&["logs", &name]).stdout, "listening on 5000\n");

    let mut connection = KeepAlive::connect(&addr, "upstream").expect("connect");
    for _ in 0..2 {
        let answer = connection.get("/").expect("GET / on the kept-alive connection");
        assert_eq!(answer, (200, "hello from upstream\n".to_owned()));
    }

    assert_eq!(download(&addr, "upstream", "/download?bytes=10000000"), Some((200, 10_000_000)));
    let slow = "/download?bytes=300000&chunk=65536&delay_ms=50";
    assert_eq!(download(&addr, "upstream", slow), Some((200, 300_000)));

    let mut ws = WsClient::connect(&addr, "upstream", "/ws").expect("WebSocket handshake");
    assert_eq!(ws.send_text("one").as_deref(), Some("hello from upstream: one"));
    assert_eq!(ws.send_text("two").as_deref(), Some("hello from upstream: two"));
    ws.close();

    let request = "GET /headers HTTP/1.0\r\nHost: upstream\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n";
    let (status, _, body) = raw(&addr, request).expect("GET /headers");
    assert_eq!(status, 200);
    assert!(body.lines().any(|line| line == "x-forwarded-for: 192.0.2.7"), "{body}");

    for bad in ["/download?bytes=lots", "/download", "/download?bytes=1&chunk=0", "/sleep?ms=-1"] {
        assert_eq!(connection.get(bad).map(|(status, _)| status), Some(400), "{bad}");
    }
    assert_eq!(connection.get("/nowhere").map(|(status, _)| status), Some(404));
    drop(connection);

    // A request in flight when SIGTERM comes still gets its answer.
    let in_flight = {
        let addr = addr.clone();
        std::thread::spawn(move || KeepAlive::connect(&addr, "upstream")?.get("/sleep?ms=1500"))
    };
    std::thread::sleep(Duration::from_millis(500));
    // docker stop sends SIGTERM, then SIGKILL after 30 s: an app that ignored
    // SIGTERM would take all of them.
    let stopping = Instant::now();
    docker(&["stop", "--time", "30", &name]).assert_ok();
    assert!(stopping.elapsed() < Duration::from_secs(10), "stopping took {:?}", stopping.elapsed());
    assert_eq!(in_flight.join().expect("thread"), Some((200, "slept 1500\n".to_owned())));
}
