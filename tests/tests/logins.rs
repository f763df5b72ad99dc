//! The SSH gateway before and after login (issue 14, items 3 and 4):
//! connections that never log in neither lock a user out nor stay, and a
//! key removed while a connection it opened lives runs nothing more: its
//! running commands end (issue 27), and new ones are refused.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nap_tests::{Gateway, Run, closed_by_peer, open_fds, ssh_options};

#[test]
fn idle_and_half_done_connections_neither_lock_a_user_out_nor_stay() {
    let gateway = Gateway::builder().settings("login_grace_time = 3\n").start();
    let admin = gateway.user("admin");
    let address = format!("127.0.0.1:{}", gateway.port);
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
    let baseline = open_fds(gateway.pid());

    // 500 connections that say nothing, and 50 that stop after their banner.
    let mut idle: Vec<TcpStream> = (0..500).map(|_| TcpStream::connect(&address).expect("connect")).collect();
    let mut half: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).expect("connect");
            stream.write_all(b"SSH-2.0-half-done\r\n").expect("banner");
            stream
        })
        .collect();

    let started = Instant::now();
    let version = gateway.ssh(&admin, "nap", &["version"]);
    let took = started.elapsed();
    version.assert_ok();
    // The issue asks for under 1 s; bounded loosely here, reported in the note.
    assert!(took < Duration::from_secs(5), "version took {took:?} behind 550 connections not logged in");
    eprintln!("ssh version behind 550 connections not logged in: {took:?}");

    // Each is cut: the oldest to make room, the rest after the grace time.
    for stream in idle.iter_mut().chain(half.iter_mut()) {
        assert!(closed_by_peer(stream, Duration::from_secs(15)), "a connection not logged in stayed open");
    }
    drop((idle, half));
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(gateway.pid()) > baseline + 2 {
        assert!(Instant::now() < deadline, "the gateway holds {} fds, {baseline} before", open_fds(gateway.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    gateway.ssh(&admin, "nap", &["version"]).assert_ok();
}

#[test]
fn a_removed_key_runs_nothing_more_on_a_connection_opened_before() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = nap_tests::unique("removed");
    nap_tests::AppRepo::new(nap_tests::AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let dev = gateway.user_for("dev", &[&app]);
    let control = tempfile::tempdir().expect("temp dir");
    let control_path = format!("ControlPath={}", control.path().join("master").display());
    let port = gateway.port.to_string();
    let over_master = |extra: &[&str], command: &[&str]| -> Run {
        Command::new("ssh")
            .args(ssh_options(&dev.private))
            .args(["-o", &control_path, "-p", &port])
            .args(extra)
            .arg("nap@127.0.0.1")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("ssh")
            .into()
    };
    // One connection, kept open by a master in the background (`-f`).
    let master = Command::new("ssh")
        .args(ssh_options(&dev.private))
        .args(["-o", &control_path, "-o", "ControlMaster=yes", "-p", &port, "-f", "-N", "nap@127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh master");
    assert!(master.success(), "the master connection did not start");
    let stop_master = || {
        let _ = over_master(&["-O", "exit"], &[]);
    };
    let before = over_master(&["-o", "ControlMaster=no"], &["version"]);
    if !before.ok() {
        stop_master();
    }
    before.assert_ok();
    // A command that runs until its client goes, over the same connection.
    let mut following = Command::new("ssh")
        .args(ssh_options(&dev.private))
        .args(["-o", &control_path, "-o", "ControlMaster=no", "-p", &port, "nap@127.0.0.1"])
        .args(["logs", &app, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh logs --follow");
    std::thread::sleep(Duration::from_secs(2));
    let still_following = following.try_wait().expect("ssh's status").is_none();

    gateway.ssh(&admin, "nap", &["keys", "remove", "dev"]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while following.try_wait().expect("ssh's status").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = following.try_wait().expect("ssh's status").is_some();
    if !ended {
        let _ = following.kill();
    }
    let followed: Run = following.wait_with_output().expect("ssh's output").into();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let run = over_master(&["-o", "ControlMaster=no"], &["version"]);
        if !run.ok() || Instant::now() >= deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let master_lives = over_master(&["-O", "check"], &[]).ok();
    stop_master();
    assert!(still_following, "logs --follow ended before the key was removed: {followed:?}");
    assert!(ended, "the removed key's logs --follow still runs");
    assert_eq!(followed.code, Some(1), "{followed:?}");
    assert!(followed.stderr.contains("error: the key \"dev\" is no longer allowed in"), "{}", followed.stderr);
    assert!(master_lives, "the master connection ended: the check proves nothing");
    assert_eq!(refused.code, Some(1), "the removed key still runs commands: {refused:?}");
    assert!(refused.stderr.contains("error: the key \"dev\" is no longer allowed in"), "{}", refused.stderr);
}

/// The README's claim: nap offers `mlkem768x25519-sha256`, the post-quantum
/// hybrid key exchange (russh's default, first). A client that allows only
/// it logs in and runs a command. (Debian 12's OpenSSH 9.2 client predates
/// it and negotiates `curve25519-sha256`; OpenSSH 9.9 and later pick it.)
#[test]
fn a_client_that_allows_only_the_post_quantum_key_exchange_gets_in() {
    use std::borrow::Cow;
    use std::sync::Arc;

    struct AnyHostKey;
    impl russh::client::Handler for AnyHostKey {
        type Error = russh::Error;
        async fn check_server_key(&mut self, _: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let key = russh::keys::load_secret_key(&alice.private, None).expect("the test key");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (output, status) = runtime.block_on(async {
        let preferred =
            russh::Preferred { kex: Cow::Borrowed(&[russh::kex::MLKEM768X25519_SHA256]), ..Default::default() };
        let config = Arc::new(russh::client::Config { preferred, ..Default::default() });
        let mut session =
            russh::client::connect(config, ("127.0.0.1", gateway.port), AnyHostKey).await.expect("key exchange");
        let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None);
        let auth = session.authenticate_publickey("nap", key).await.expect("authentication");
        assert!(auth.success(), "the key was refused");
        let mut channel = session.channel_open_session().await.expect("a session channel");
        channel.exec(true, "version").await.expect("exec");
        let (mut output, mut status) = (Vec::new(), None);
        while let Some(message) = channel.wait().await {
            match message {
                russh::ChannelMsg::Data { data } => output.extend_from_slice(&data),
                russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        (String::from_utf8_lossy(&output).into_owned(), status)
    });
    assert_eq!(status, Some(0), "{output}");
    assert!(output.starts_with("nap "), "{output}");
}

/// Issue 14, item 11: a command that reads no input (`logs --follow`)
/// still sees its client go, however much input the client sent first.
#[test]
fn input_to_a_command_that_reads_none_does_not_hide_the_clients_close() {
    let gateway = Gateway::start();
    let alice = gateway.user("alice");
    let app = nap_tests::unique("unread");
    nap_tests::AppRepo::new(nap_tests::AppKind::Web).push(&gateway, &alice, &app, "master").assert_ok();
    let ended = || gateway.log().matches("command ended").count();
    let before = ended();

    let mut follow = gateway.ssh_command(&alice, "nap", &["logs", &app, "--follow"]).spawn().expect("ssh");
    let mut input = follow.stdin.take().expect("stdin");
    let feeding = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        // 1 MiB, as far as the gateway takes it; an error is the close.
        for _ in 0..16 {
            if input.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    follow.kill().expect("kill ssh");
    let _ = follow.wait();
    let _ = feeding.join();

    let deadline = Instant::now() + Duration::from_secs(15);
    while ended() == before {
        assert!(Instant::now() < deadline, "logs --follow still runs: the gateway did not see its client go");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_key_that_comes_to_do_less_ends_its_running_commands_and_keeps_the_rest() {
    let gateway = Gateway::start();
    let admin = gateway.user("admin");
    let (kept, lost) = (nap_tests::unique("kept"), nap_tests::unique("lost"));
    for app in [&kept, &lost] {
        nap_tests::AppRepo::new(nap_tests::AppKind::Web).push(&gateway, &admin, app, "master").assert_ok();
    }
    let dev = gateway.user_for("dev", &[&kept, &lost]);
    let follow = gateway.ssh_command(&dev, "nap", &["logs", &lost, "--follow"]).spawn().expect("ssh logs --follow");
    std::thread::sleep(Duration::from_secs(2));
    gateway.ssh(&admin, "nap", &["keys", "revoke", "dev", &lost]).assert_ok();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(follow.wait_with_output());
    });
    let output = ended.recv_timeout(Duration::from_secs(15)).expect("logs --follow ran on after revoke");
    let run: Run = output.expect("ssh's output").into();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("error: the key \"dev\" may do less now"), "{run:?}");
    // What it may still do, it does.
    gateway.ssh(&dev, "nap", &["releases", &kept]).assert_ok();
    gateway.ssh(&dev, "nap", &["releases", &lost]).assert_failed_with(&format!("may not use app {lost}"));
}
