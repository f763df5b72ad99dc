//! No connection can hold nap (issue 27, items 4 and 5). The router cuts a
//! request body that does not come (`body_timeout`), closes idle HTTP/2
//! connections as it closes idle HTTP/1.1 ones, and past `max_connections`
//! closes the connections that wait longest on their clients first, so
//! that the repros M1 and M2, run against a `nap serve` held to 1024 open
//! files (`prlimit --nofile`), leave SSH and real requests served. An SSH
//! flood from one address neither cuts logins from another address (M3)
//! nor gets past its address's rate and penalty. Every flood is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nap_tests::tls::{curl_https, pem_bundle, self_signed_leaf};
use nap_tests::{AppKind, AppRepo, Gateway, Key, closed_by_peer, free_port, get_host, open_fds, unique};

const DOMAIN: &str = "nap.test";
/// The open-file limit the repros ran `nap serve` under.
const FILES: u64 = 1024;

/// This test process opens as many connections as it floods with: its own
/// soft limit goes up to its hard limit.
fn raise_own_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("the open-file limit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the open-file limit");
}

fn settings(http: &str, extra: &str) -> String {
    format!("registry = \"{}\"\nhttp_listen = \"{http}\"\ndomain = \"{DOMAIN}\"\n{extra}", nap_tests::REGISTRY)
}

/// What became of a connection the router was to end: the status it
/// answered (`Some`), or a close with no answer (`None`). Panics if it is
/// still open after `within`.
fn answer_or_close(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => break,
            Err(err) => panic!("a connection is still open after {within:?} ({err}); it got {:?}", got.len()),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok())
}

/// M1: requests that announce a body of 1 MB and send none. Each held two
/// files for good (its own, and its connection to the app), and at 1024
/// files 600 of them made accept fail, SSH slow and real requests 502.
#[test]
fn requests_whose_body_never_comes_are_cut_and_leave_ssh_and_http_served() {
    raise_own_file_limit();
    let http = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder().settings(&settings(&http, "body_timeout = 5\n")).open_files(FILES, FILES).start();
    let admin = gateway.user("admin");
    let app = unique("held");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let host = format!("{app}.{DOMAIN}");
    assert_eq!(get_host(&http, &host, "/").map(|(status, _)| status), Some(200));
    // The cap made from 1024 files: two each, once a quarter is kept for SSH.
    let log = gateway.log_until(|log| log.contains("max_connections="));
    assert!(log.contains("max_connections=384"), "{log}");

    let announced = format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n\r\n");
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..600)
        .map(|_| {
            let mut stream = TcpStream::connect(&http).expect("connect");
            stream.write_all(announced.as_bytes()).expect("a request head");
            stream
        })
        .collect();
    let opened = started.elapsed();

    // While they are held, SSH and real requests are served.
    let asked = Instant::now();
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    let ssh_took = asked.elapsed();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = get_host(&http, &host, "/");
        assert_eq!(answer.map(|(status, body)| (status, body.trim().to_owned())), Some((200, "hello from web".into())));
        slowest = slowest.max(asked.elapsed());
    }
    let fds_held = open_fds(gateway.pid());

    // Each is answered 408 once body_timeout passes, or was closed before
    // to make room for newer connections.
    let (mut timed_out, mut made_room) = (0, 0);
    for stream in &mut held {
        match answer_or_close(stream, Duration::from_secs(20)) {
            Some(408) => timed_out += 1,
            None => made_room += 1,
            Some(other) => panic!("a request whose body never came got {other}"),
        }
    }
    let all_cut = started.elapsed();
    drop(held);
    eprintln!(
        "M1 at {FILES} files: 600 bodiless POSTs opened in {opened:?} (nap serve then held {fds_held} files); \
         ssh version took {ssh_took:?}; 20 GETs answered 200, the slowest in {slowest:?}; \
         {timed_out} got 408 and {made_room} were closed to make room, all within {all_cut:?}"
    );
    assert!(timed_out > 0, "none waited for body_timeout");
    assert!(gateway.log().contains("at max_connections"), "the router says it is at its cap");
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    assert_eq!(get_host(&http, &host, "/").map(|(status, _)| status), Some(200));
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 connection to `host` at `addr` that has sent its preface, and nothing more.
fn h2_preface_only(addr: &str, host: &str, config: &Arc<rustls::ClientConfig>) -> Tls {
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).expect("a server name");
    let connection = rustls::ClientConnection::new(Arc::clone(config), name).expect("a TLS client");
    let tcp = TcpStream::connect(addr).expect("connect");
    // A router that no longer accepts (out of files) fails the test, not hangs it.
    tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(20))).expect("write timeout");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(PREFACE).expect("the TLS handshake and the preface");
    tls.flush().expect("flush");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]), "the router speaks HTTP/2");
    tls
}

/// An HTTP/2 frame: its type, flags and payload.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame").to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const ACK: u8 = 1;

/// What a client that sends a PING every half second, and nothing else,
/// saw: how many PINGs were answered, whether a GOAWAY came, and when
/// the connection closed (after `limit` at most).
fn ping_until_closed(mut tls: Tls, limit: Duration) -> (usize, bool, Option<Duration>) {
    let started = Instant::now();
    tls.sock.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    tls.write_all(&frame(SETTINGS, 0, &[])).expect("settings");
    let (mut answered, mut goaway, mut pending) = (0, false, Vec::new());
    let mut next_ping = Instant::now();
    while started.elapsed() < limit {
        if Instant::now() >= next_ping {
            if tls.write_all(&frame(PING, 0, b"napnap00")).and_then(|()| tls.flush()).is_err() {
                return (answered, goaway, Some(started.elapsed()));
            }
            next_ping += Duration::from_millis(500);
        }
        let mut buffer = [0u8; 4096];
        match tls.read(&mut buffer) {
            Ok(0) => return (answered, goaway, Some(started.elapsed())),
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (answered, goaway, Some(started.elapsed())),
        }
        while pending.len() >= 9 {
            let len = usize::from(pending[0]) << 16 | usize::from(pending[1]) << 8 | usize::from(pending[2]);
            if pending.len() < 9 + len {
                break;
            }
            let (kind, flags) = (pending[3], pending[4]);
            match kind {
                PING if flags & ACK != 0 => answered += 1,
                SETTINGS if flags & ACK == 0 => {
                    let _ = tls.write_all(&frame(SETTINGS, ACK, &[]));
                }
                GOAWAY => goaway = true,
                _ => {}
            }
            pending.drain(..9 + len);
        }
    }
    (answered, goaway, None)
}

/// M2: HTTP/2 connections that send their preface and nothing more. At
/// 1024 files, 1,002 of them made the whole process unusable.
#[test]
fn idle_http2_connections_close_and_leave_ssh_and_http_served() {
    raise_own_file_limit();
    let (http, https) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let extra = format!("https_listen = \"{https}\"\n");
    let gateway = Gateway::builder().settings(&settings(&http, &extra)).open_files(FILES, FILES).start();
    let admin = gateway.user("admin");
    let app = unique("idle");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let host = format!("{app}.{DOMAIN}");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_leaf(dir.path(), "idle", &[&host]);
    gateway.ssh_with_input(&admin, "nap", &["certs", "add", &app], &pem_bundle(&cert, &key)).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !curl_https(&https, &host, "/", &cert, &["--http2"]).ok() {
        assert!(Instant::now() < deadline, "HTTPS never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let config = nap_tests::http2::tls_config(&cert);
    let started = Instant::now();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let (https, host, config) = (https.clone(), host.clone(), Arc::clone(&config));
            std::thread::spawn(move || (0..251).map(|_| h2_preface_only(&https, &host, &config)).collect::<Vec<_>>())
        })
        .collect();
    let mut idle: Vec<Tls> = openers.into_iter().flat_map(|opener| opener.join().expect("opened")).collect();
    let opened = started.elapsed();
    // The newest: it PINGs, and is answered, yet closes once idle too long.
    let pinging = {
        let tls = h2_preface_only(&https, &host, &config);
        std::thread::spawn(move || ping_until_closed(tls, Duration::from_secs(30)))
    };

    let asked = Instant::now();
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    let ssh_took = asked.elapsed();
    let asked = Instant::now();
    assert_eq!(
        get_host(&http, &host, "/").map(|(status, body)| (status, body.trim().to_owned())),
        Some((200, "hello from web".into()))
    );
    let http_took = asked.elapsed();
    let asked = Instant::now();
    let run = curl_https(&https, &host, "/", &cert, &["--http2"]);
    assert!(run.ok() && run.stdout.ends_with("\n2 200"), "{run:?}");
    let tls_took = asked.elapsed();

    // Every idle one is closed: within the idle timeout (10 s), or sooner to make room.
    for tls in &mut idle {
        tls.sock.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        let mut sink = Vec::new();
        let read = tls.read_to_end(&mut sink);
        let open = read.as_ref().is_err_and(|err| matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        assert!(!open, "an idle HTTP/2 connection is still open: {read:?}");
    }
    let all_closed = started.elapsed();
    let (answered, goaway, closed_after) = pinging.join().expect("pinged");
    eprintln!(
        "M2 at {FILES} files: 1004 idle HTTP/2 connections opened in {opened:?}; ssh version took {ssh_took:?}, \
         an HTTP GET {http_took:?}, an HTTP/2 GET over TLS {tls_took:?}; all closed within {all_closed:?}; \
         the pinging one had {answered} PINGs answered, GOAWAY {goaway}, and closed after {closed_after:?}"
    );
    assert!(answered >= 5, "the client's PINGs are answered");
    let closed_after = closed_after.expect("an idle connection that PINGs is closed all the same");
    assert!(goaway, "an idle connection is told it closes (GOAWAY)");
    assert!(closed_after >= Duration::from_secs(9), "closed as idle before its time: {closed_after:?}");
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
}

/// An HTTP/2 client that never opens its flow-control window takes no more
/// of an answer: its connection is cut within `body_timeout`, however it
/// answers PINGs; a quiet WebSocket is closed after as long.
#[test]
fn a_client_that_takes_no_more_of_an_answer_and_a_quiet_websocket_are_cut() {
    let (http, https) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let extra = format!("https_listen = \"{https}\"\nbody_timeout = 2\n");
    let gateway = Gateway::builder().settings(&settings(&http, &extra)).start();
    let admin = gateway.user("admin");
    let app = unique("stall");
    AppRepo::new(AppKind::Upstream).push(&gateway, &admin, &app, "master").assert_ok();
    let host = format!("{app}.{DOMAIN}");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_leaf(dir.path(), "stall", &[&host]);
    gateway.ssh_with_input(&admin, "nap", &["certs", "add", &app], &pem_bundle(&cert, &key)).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !curl_https(&https, &host, "/", &cert, &["--http2"]).ok() {
        assert!(Instant::now() < deadline, "HTTPS never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (status, cut_after) = runtime.block_on(async {
        let (mut client, connection) = nap_tests::http2::connect(&https, &host, &cert, Some(0)).await;
        // The answer is held, its body never read: the request stays open.
        let answer = nap_tests::http2::get(&mut client, &host, &[]).await;
        let asked = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(8), connection).await;
        (answer.status().as_u16(), ended.is_ok().then(|| asked.elapsed()))
    });
    assert_eq!(status, 200, "the answer's head comes; its body waits on the client");
    let cut_after = cut_after.expect("a client that takes no more of an answer is cut");
    assert!(cut_after >= Duration::from_secs(1), "cut before its time: {cut_after:?}");

    let mut quiet = nap_tests::WsClient::connect(&http, &host, "/ws").expect("a WebSocket");
    assert_eq!(quiet.send_text("a").as_deref(), Some("hello from upstream: a"));
    let mut chatty = nap_tests::WsClient::connect(&http, &host, "/ws").expect("a WebSocket");
    for i in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(chatty.send_text(&format!("{i}")).is_some(), "a WebSocket in use stays open");
    }
    assert_eq!(quiet.send_text("b"), None, "a quiet WebSocket is closed after body_timeout");
    eprintln!("an HTTP/2 client with its window shut was cut after {cut_after:?}");
}

/// Past `max_connections`, a new connection takes the place of one idle
/// between requests (the oldest first), before one stalled mid-request;
/// and nap raises its soft open-file limit to the hard one.
#[test]
fn past_max_connections_the_idle_close_first_and_the_file_limit_is_raised() {
    let http = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder().settings(&settings(&http, "max_connections = 20\n")).open_files(512, 4096).start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gateway.pid())).expect("limits");
    let files = limits.lines().find(|line| line.starts_with("Max open files")).expect("the open-file limit");
    assert_eq!(files.split_whitespace().skip(3).take(2).collect::<Vec<_>>(), ["4096", "4096"], "{files}");

    let connect = || TcpStream::connect(&http).expect("connect");
    // Ten stalled mid-head, then ten idle: the cap.
    let mut stalled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = connect();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: nobody.nap.test\r\n").expect("half a head");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut idle: Vec<TcpStream> = (0..10).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // Five more: the five oldest idle ones make room, not the older stalled ones.
    let mut newer: Vec<TcpStream> = (0..5).map(|_| connect()).collect();
    for (n, stream) in idle.iter_mut().enumerate() {
        assert_eq!(closed_by_peer(stream, Duration::from_millis(500)), n < 5, "idle connection {n}");
    }
    for stream in &mut stalled {
        assert!(!closed_by_peer(stream, Duration::from_millis(100)), "a stalled one closed while idle ones were open");
    }
    // A real request is answered (404: no app there), in the place of another.
    let (status, _, _) = nap_tests::raw(&http, "GET / HTTP/1.0\r\nHost: nobody.nap.test\r\n\r\n").expect("an answer");
    assert_eq!(status, 404);
    assert!(closed_by_peer(&mut idle[5], Duration::from_secs(2)), "the oldest idle one left made room");
    for stream in &mut newer {
        assert!(!closed_by_peer(stream, Duration::from_millis(100)));
    }
}

/// A flood of connections from 127.0.0.1 that are not logged in: `threads`
/// threads connect and send a banner, each keeping its last 200, until
/// `stop` (or 20,000 connections); answers how many it made.
fn flood(port: u16, threads: usize, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let (made, stop) = (Arc::new(AtomicUsize::new(0)), Arc::clone(stop));
    std::thread::spawn(move || {
        let floods: Vec<_> = (0..threads)
            .map(|_| {
                let (made, stop) = (Arc::clone(&made), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    while !stop.load(Ordering::Relaxed) && made.load(Ordering::Relaxed) < 20_000 {
                        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                            let _ = stream.write_all(b"SSH-2.0-flood\r\n");
                            held.push_back(stream);
                            if held.len() > 200 {
                                held.pop_front();
                            }
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for flood in floods {
            let _ = flood.join();
        }
        made.load(Ordering::Relaxed)
    })
}

/// `ssh -b 127.0.0.2 ... version`: a login from another loopback address.
fn version_from_elsewhere(gateway: &Gateway, key: &Key) -> (bool, Duration, String) {
    let asked = Instant::now();
    let run = gateway.ssh_command_with(key, "nap", &["-b", "127.0.0.2"], &["version"]).output().expect("ssh");
    (run.status.success(), asked.elapsed(), String::from_utf8_lossy(&run.stderr).into_owned())
}

/// Whether a new connection from 127.0.0.1 is closed at once, before the
/// gateway says a word of SSH.
fn refused_at_accept(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return true };
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let mut banner = [0u8; 64];
    match stream.read(&mut banner) {
        Ok(0) => true,
        Err(err) => err.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// M3: the newest connection cut the oldest not logged in, so a flood cut
/// real logins mid-handshake. Here one address may fill every place
/// (`max_startups` = `per_source_max_startups` = 10, so that a test's flood
/// is fast enough), yet every login from another address gets in: the
/// address holding the most gives up its oldest.
#[test]
fn a_flood_from_one_address_never_cuts_logins_from_another() {
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{}\"\nmax_startups = 10\nper_source_max_startups = 10\n", nap_tests::REGISTRY))
        .start();
    let admin = gateway.user("admin");
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(gateway.port, 4, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let logins: Vec<_> = (0..10).map(|_| version_from_elsewhere(&gateway, &admin)).collect();
    stop.store(true, Ordering::Relaxed);
    let made = flooding.join().expect("flooded");
    let slowest = logins.iter().map(|(_, took, _)| *took).max().unwrap_or_default();
    eprintln!("M3: {made} connections from 127.0.0.1; 10 logins from 127.0.0.2, the slowest in {slowest:?}");
    for (ok, took, stderr) in &logins {
        assert!(ok, "a login from 127.0.0.2 failed after {took:?} behind {made} connections: {stderr}");
    }
    assert!(made > 100, "the flood made {made} connections only");
}

/// An address whose connections keep ending without logging in is closed
/// at accept, before any SSH, until its penalty runs out; another address
/// logs in all the while.
#[test]
fn a_flooding_address_is_refused_at_accept_until_its_penalty_runs_out() {
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nper_source_penalty_exempt_list = \"none\"\nper_source_max_startups = 5\n\
         per_source_penalties = \"noauth:1 grace-exceeded:5 evicted:1 max:5 min:3\"\n",
            nap_tests::REGISTRY
        ))
        .start();
    let admin = gateway.user("admin");
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(gateway.port, 2, &stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused_at_accept(gateway.port) {
        assert!(Instant::now() < deadline, "127.0.0.1 is never refused:\n{}", gateway.log());
    }
    let logins: Vec<_> = (0..5).map(|_| version_from_elsewhere(&gateway, &admin)).collect();
    stop.store(true, Ordering::Relaxed);
    let made = flooding.join().expect("flooded");
    for (ok, took, stderr) in &logins {
        assert!(ok, "a login from 127.0.0.2 failed after {took:?}: {stderr}");
    }
    let log = gateway.log_until(|log| log.contains("penalty: SSH connections from this address are refused"));
    assert!(log.contains("penalty: SSH connections from this address are refused"), "{log}");
    // The penalty (at most 5 s) runs out: 127.0.0.1 logs in again.
    let flood_ended = Instant::now();
    let back = loop {
        if gateway.ssh(&admin, "nap", &["version"]).ok() {
            break flood_ended.elapsed();
        }
        assert!(flood_ended.elapsed() < Duration::from_secs(20), "127.0.0.1 stays refused");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "penalties: a flood of {made} connections from 127.0.0.1 refused at accept; 127.0.0.1 back after {back:?}"
    );
}

/// More than `per_source_connection_rate` new connections a second from
/// one address are closed at accept; another address is not held back.
#[test]
fn an_address_over_its_connection_rate_is_refused_at_accept() {
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nper_source_penalty_exempt_list = \"none\"\nper_source_penalties = \"no\"\n\
         per_source_connection_rate = 2\n",
            nap_tests::REGISTRY
        ))
        .start();
    let admin = gateway.user("admin");
    // A burst of five seconds' worth (10, one of them the harness's own
    // check that nap listens) is let in; the rest are refused.
    let burst: Vec<Option<TcpStream>> = (0..30).map(|_| TcpStream::connect(("127.0.0.1", gateway.port)).ok()).collect();
    let refused = burst
        .into_iter()
        .flatten()
        .filter_map(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut banner = [0u8; 64];
            Some(matches!(stream.read(&mut banner), Ok(0) | Err(_)))
        })
        .filter(|refused| *refused)
        .count();
    let let_in = 30 - refused;
    assert!((5..=10).contains(&let_in), "{let_in} of 30 let in at 2 a second (bursts of 10)");
    let (ok, took, stderr) = version_from_elsewhere(&gateway, &admin);
    assert!(ok, "127.0.0.2 was held back ({took:?}): {stderr}");
    std::thread::sleep(Duration::from_secs(1));
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    assert!(gateway.log().contains("per_source_connection_rate"), "the refusal is logged once");
}
