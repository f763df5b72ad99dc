//! Faults, each ending with the previous release serving and no lock left:
//! etcd stops in the middle of a push and of a commit, comes back, and a
//! host dies holding a deploy lock (each with an etcd of its own,
//! `PrivateEtcd`, since it stops it); dockerd restarts mid-build (a dockerd
//! of the test's own); the registry goes down mid-push; the data
//! directory's disk fills up; `nap serve` is killed mid-deploy.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::{Duration, Instant};

use nap_tests::{
    AppKind, AppRepo, AuthRegistry, Dockerd, Gateway, Key, PrivateEtcd, REGISTRY, Run, containers_of, docker, unique,
    wait_for_body,
};

/// A running command whose stderr is read as it comes.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines, seen: String::new() }
    }

    /// Waits until a line of stderr holds `text`.
    fn wait_for_line(mut self, text: &str) -> Running {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line with {text:?} in:\n{}", self.seen));
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(text) {
                return self;
            }
        }
    }

    /// Waits for the command to end; its whole output.
    fn finish(mut self) -> Run {
        let output = self.child.wait_with_output().expect("wait");
        self.seen.extend(self.lines.iter().map(|line| line + "\n"));
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: self.seen,
        }
    }
}

/// A gateway on `etcd`, as host `host`, and an admin key on it.
fn gateway_on(etcd: &PrivateEtcd, host: &str, extra: &str) -> Gateway {
    Gateway::builder()
        .settings(&format!("store = \"{}\"\nregistry = \"{REGISTRY}\"\nhost_name = \"{host}\"\n{extra}", etcd.url()))
        .start()
}

fn admin_of(gateway: &Gateway, name: &str) -> Key {
    gateway.user(name)
}

#[test]
fn etcd_stopping_in_the_middle_of_a_push_refuses_it_and_leaves_no_half_state() {
    let mut etcd = PrivateEtcd::start();
    let gateway = gateway_on(&etcd, "host-a", "");
    let admin = admin_of(&gateway, "admin");
    let app = unique("etcdpush");
    let repo = AppRepo::new(AppKind::Web);
    let first = repo.push(&gateway, &admin, &app, "master");
    first.assert_ok();
    let url = first.url().expect("url");
    let good = repo.head();

    // v2 waits 3 s before it answers: etcd dies while nap waits for it.
    repo.become_kind(AppKind::Slow);
    let push = Running::new(repo.spawn_push(&gateway, &admin, &app, "master")).wait_for_line("Releasing v2");
    etcd.kill();
    let push = push.finish();
    push.assert_failed_with(&format!("etcd at 127.0.0.1:{}", etcd.client_port));
    push.assert_failed_with("pre-receive hook declined");
    assert_eq!(gateway.branch_sha(&app, "master"), Some(good.clone()), "the ref moved");
    assert!(wait_for_body(&url, "hello from web", Duration::from_secs(5)), "v1 stopped serving");
    assert_eq!(containers_of(&app), [format!("nap-{app}-v1-web.1")], "v2 answered, but unrecorded it must not run");

    etcd.start_again();
    let current = etcd.etcdctl(&["get", "--print-value-only", &format!("/nap/apps/{app}/current")]);
    assert_eq!(current.stdout.trim(), "1", "current moved without its release");
    let releases = gateway.ssh(&admin, "nap", &["releases", &app]);
    releases.assert_ok();
    // The next push works at once: the dead push's lock is not waited for
    // (its holder's pid is gone on this host), and v2 is marked interrupted.
    repo.become_kind(AppKind::Web);
    repo.commit("index.html", "after etcd came back\n");
    let next = repo.push(&gateway, &admin, &app, "master");
    next.assert_ok();
    assert!(wait_for_body(&next.url().expect("url"), "after etcd came back", Duration::from_secs(10)));
    let listed = gateway.ssh(&admin, "nap", &["releases", &app, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.assert_ok().stdout).expect("json");
    let statuses: Vec<_> = listed.as_array().expect("array").iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, ["succeeded", "failed", "succeeded"], "{listed}");
}

#[test]
fn etcd_stopping_in_the_middle_of_a_commit_leaves_each_containers_keys_whole() {
    let mut etcd = PrivateEtcd::start();
    let root = format!("/{}", unique("commiter"));
    let gateway = gateway_on(&etcd, "host-a", &format!("commiter_root = \"{root}\"\nhost_ip = \"10.200.0.9\"\n"));
    let admin = admin_of(&gateway, "admin");
    let app = unique("etcdcommit");
    gateway.cleanup().images(format!("{REGISTRY}/{app}-web-*"));
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let container = format!("nap-{app}-v1-web.1");
    // A layer worth pushing, so the commit is still pushing when etcd goes.
    docker(&["exec", &container, "dd", "if=/dev/urandom", "of=/www/blob", "bs=1M", "count=40"]).assert_ok();
    let import = format!("App: {app}\nComponent: web\nRepository: {REGISTRY}\nIps:\n  - Ip: 10.200.0.9\n");
    gateway.ssh_with_input(&admin, "nap", &["import", "--commit", "1"], &import).assert_ok();

    let commit = Running::new(gateway.ssh_command(&admin, "nap", &["commit"]).spawn().expect("ssh"));
    let commit = commit.wait_for_line("Pushing");
    etcd.kill();
    let commit = commit.finish();
    assert_eq!(commit.code, Some(1), "{commit:?}");
    commit.assert_failed_with(&format!("{container} ("));
    commit.assert_failed_with(&format!("etcd at 127.0.0.1:{}", etcd.client_port));

    etcd.start_again();
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/")]);
    let keys: Vec<&str> = keys.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        keys.iter().all(|k| !k.contains("/ips/") && !k.contains("/takeover/")),
        "a failed snapshot left keys: {keys:?}"
    );
    // etcd is back: the next commit works and writes both keys.
    let again = gateway.ssh(&admin, "nap", &["commit", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&again.assert_ok().stdout).expect("json");
    let image = rows[0]["image"].as_str().expect("image");
    let ip = etcd.etcdctl(&["get", "--print-value-only", &format!("{root}/ips/{image}")]);
    assert_eq!(ip.stdout.trim(), rows[0]["ip"].as_str().expect("ip"));
    let takeover = etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/takeover/{app}/")]);
    assert_eq!(takeover.stdout.lines().filter(|l| !l.is_empty()).count(), 1, "{takeover:?}");
}

#[test]
fn a_host_that_dies_holding_a_deploy_lock_frees_it_when_its_lease_expires() {
    let etcd = PrivateEtcd::start();
    let mut host_a = gateway_on(&etcd, "host-a", "");
    let host_b = gateway_on(&etcd, "host-b", "");
    let (alice, bob) = (admin_of(&host_a, "alice"), admin_of(&host_b, "bob"));
    let app = unique("deadhost");
    let repo = AppRepo::new(AppKind::Slow);
    let push = Running::new(repo.spawn_push(&host_a, &alice, &app, "master")).wait_for_line("Releasing v1");
    host_a.kill_host();
    drop(push);

    // host-b is refused at once, naming the dead host's push...
    let started = Instant::now();
    let refused = repo.push(&host_b, &bob, &app, "master");
    refused.assert_failed_with(&format!("{app} is already deploying (push of"));
    refused.assert_failed_with("on host-a");
    assert!(started.elapsed() < Duration::from_secs(10), "the refusal waited");
    // ...until the lock's lease (10 s) runs out with nobody renewing it.
    let deadline = Instant::now() + Duration::from_secs(40);
    let pushed = loop {
        let attempt = repo.push(&host_b, &bob, &app, "master");
        if attempt.ok() || Instant::now() > deadline {
            break attempt;
        }
        assert!(attempt.stderr.contains("already deploying"), "{attempt:?}");
        std::thread::sleep(Duration::from_secs(1));
    };
    pushed.assert_ok();
}

/// Issue 14, item 7: a deploy whose lease on the deploy lock ends under it
/// (revoked here, as when it expires while etcd does not answer, and
/// another host may then take the lock) learns it before it makes anything
/// current; the next deploy, from another host, goes through.
#[test]
fn a_deploy_that_lost_its_lock_makes_nothing_current() {
    let etcd = PrivateEtcd::start();
    let host_a = gateway_on(&etcd, "host-a", "");
    let host_b = gateway_on(&etcd, "host-b", "");
    let admin = admin_of(&host_a, "admin");
    let app = unique("lostlock");
    let repo = AppRepo::new(AppKind::Web);
    let first = repo.push(&host_a, &admin, &app, "master");
    first.assert_ok();

    // v2 waits 3 s before it answers; meanwhile its lock's lease ends.
    repo.become_kind(AppKind::Slow);
    let slow = Running::new(repo.spawn_push(&host_a, &admin, &app, "master")).wait_for_line("Releasing v2");
    let lock = etcd.etcdctl(&["get", "--print-value-only", &format!("/nap/locks/{app}")]);
    let holder: serde_json::Value = serde_json::from_str(lock.assert_ok().stdout.trim()).expect("the lock's JSON");
    let lease = holder["lease"].as_i64().expect("a lease");
    etcd.etcdctl(&["lease", "revoke", &format!("{lease:x}")]).assert_ok();

    let slow = slow.finish();
    slow.assert_failed_with(&format!("lost the deploy lock of {app}"));
    let current = || etcd.etcdctl(&["get", "--print-value-only", &format!("/nap/apps/{app}/current")]);
    assert_eq!(current().stdout.trim(), "1", "the deploy that lost its lock made v2 current");
    assert!(wait_for_body(&first.url().expect("url"), "hello from web", Duration::from_secs(5)), "v1 stopped");

    // Host B takes the lock and deploys v3.
    let other = AppRepo::new(AppKind::Web);
    other.commit("index.html", "from host b\n");
    let from_b = other.push(&host_b, &admin, &app, "+master");
    from_b.assert_ok();
    assert_eq!(current().stdout.trim(), "3");
    assert!(wait_for_body(&from_b.url().expect("url"), "from host b", Duration::from_secs(10)));
}

/// v1 of a web app on `gateway`; its URL.
fn serving_v1(gateway: &Gateway, admin: &Key, app: &str, repo: &AppRepo) -> String {
    let first = repo.push(gateway, admin, app, "master");
    first.assert_ok();
    first.url().expect("url")
}

/// v1 still serves, alone, and no lock is left: a command that takes the
/// app's lock runs at once.
fn v1_serves_and_no_lock_is_left(gateway: &Gateway, admin: &Key, app: &str, url: &str) {
    assert!(wait_for_body(url, "hello from web", Duration::from_secs(10)), "v1 stopped answering");
    let started = Instant::now();
    gateway.ssh(admin, "nap", &["config", "set", app, "AFTER=1", "--no-restart"]).assert_ok();
    assert!(started.elapsed() < Duration::from_secs(5), "the config change waited for a lock");
}

#[test]
fn the_registry_going_down_mid_push_refuses_it_and_the_next_push_works() {
    let mut registry = AuthRegistry::start("pusher", "registry-secret");
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nregistry_username = \"pusher\"\nregistry_password = \"registry-secret\"\n",
            registry.address
        ))
        .start();
    let admin = gateway.user("admin");
    let app = unique("regdown");
    let repo = AppRepo::new(AppKind::Web);
    let url = serving_v1(&gateway, &admin, &app, &repo);

    repo.commit("index.html", "two\n");
    let push = Running::new(repo.spawn_push(&gateway, &admin, &app, "master")).wait_for_line("Building");
    registry.kill();
    let refused = push.finish();
    refused.assert_failed_with("to the registry failed");
    refused.assert_failed_with(&format!("{app} keeps serving v1"));
    v1_serves_and_no_lock_is_left(&gateway, &admin, &app, &url);
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v1-web.1")]);

    registry.start_again();
    let again = repo.push(&gateway, &admin, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains("v3 is live"), "{}", again.stderr);
}

/// A small ext4 filesystem on a loop device, mounted at `path` until dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let (file, path) = (dir.path().join("disk.img"), dir.path().join("data"));
        std::fs::File::create(&file).and_then(|f| f.set_len(megabytes << 20)).expect("disk image");
        std::fs::create_dir(&path).expect("mount point");
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let run: Run = std::process::Command::new(program).args(args).output().expect(program).into();
            run.assert_ok();
        };
        run("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), "-m".as_ref(), "0".as_ref(), file.as_os_str()]);
        run("mount", &["-o".as_ref(), "loop".as_ref(), file.as_os_str(), path.as_os_str()]);
        SmallDisk { _dir: dir, path }
    }

    /// Fills what is left with one file; answers it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        // Down to the last byte, and on disk (ext4 allocates late).
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![0x5a_u8; size];
            while file.write_all(&chunk).and_then(|()| file.sync_data()).is_ok() {}
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_data_disk_refuses_the_push_and_loses_nothing() {
    let disk = SmallDisk::mount(64);
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{REGISTRY}\"\ndata_dir = \"{}\"\n", disk.path.display()))
        .start();
    let admin = gateway.user("admin");
    let app = unique("diskfull");
    let repo = AppRepo::new(AppKind::Web);
    let url = serving_v1(&gateway, &admin, &app, &repo);
    let repo_dir = disk.path.join("repos").join(format!("{app}.git"));
    let before = nap_tests::rev_parse(&repo_dir, "refs/heads/master");

    let filler = disk.fill();
    repo.commit("index.html", "two\n");
    let refused = repo.push(&gateway, &admin, &app, "master");
    assert!(!refused.ok(), "a push to a full disk went through: {refused:?}");
    assert!(refused.stderr.contains("No space left on device"), "{}", refused.stderr);
    assert_eq!(nap_tests::rev_parse(&repo_dir, "refs/heads/master"), before, "the ref moved");
    assert!(wait_for_body(&url, "hello from web", Duration::from_secs(10)), "v1 stopped answering");
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v1-web.1")]);

    std::fs::remove_file(filler).expect("free the disk");
    v1_serves_and_no_lock_is_left(&gateway, &admin, &app, &url);
    let again = repo.push(&gateway, &admin, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains(" is live"), "{}", again.stderr);
    drop(gateway);
}

#[test]
fn nap_serve_killed_mid_deploy_then_restarted_fails_that_release_and_the_next_push_works() {
    let mut gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("killed");
    let repo = AppRepo::new(AppKind::Web);
    let url = serving_v1(&gateway, &admin, &app, &repo);

    // v2 takes 3 s to answer: the host dies while it starts.
    repo.become_kind(AppKind::Slow);
    let push = Running::new(repo.spawn_push(&gateway, &admin, &app, "master")).wait_for_line("Waiting for");
    gateway.kill_host();
    let _ = push.finish();
    gateway.restart();
    v1_serves_and_no_lock_is_left(&gateway, &admin, &app, &url);

    repo.become_kind(AppKind::Web);
    repo.commit("index.html", "three\n");
    let again = repo.push(&gateway, &admin, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains("v3 is live"), "{}", again.stderr);
    let releases = gateway.ssh(&admin, "nap", &["releases", &app, "--json"]);
    let releases: serde_json::Value = serde_json::from_str(&releases.assert_ok().stdout).expect("JSON");
    let v2 = releases.as_array().and_then(|all| all.iter().find(|r| r["version"] == 2)).expect("v2").clone();
    assert_eq!(v2["status"], "failed", "{v2}");
    assert!(v2["error"].as_str().is_some_and(|e| e.contains("interrupted")), "{v2}");
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v3-web.1")], "the killed deploy's instance is left");
}

#[test]
fn nap_serve_killed_alone_mid_deploy_leaves_its_orphaned_hook_nothing_to_make_current() {
    let mut gateway = Gateway::start();
    let admin = gateway.user("admin");
    let app = unique("orphan");
    let repo = AppRepo::new(AppKind::Web);
    let url = serving_v1(&gateway, &admin, &app, &repo);

    // v2 takes 3 s to answer: `nap serve` alone is killed meanwhile, and the
    // pusher is told the push failed; git and its hook go on without it.
    repo.become_kind(AppKind::Slow);
    let push = Running::new(repo.spawn_push(&gateway, &admin, &app, "master")).wait_for_line("Waiting for");
    gateway.kill_serve();
    let told = push.finish();
    assert_ne!(told.code, Some(0), "{told:?}");
    let v2 = || {
        let releases = gateway.nap(&["releases", &app, "--json"], "");
        let releases: serde_json::Value = serde_json::from_str(&releases.assert_ok().stdout).expect("JSON");
        releases.as_array().and_then(|all| all.iter().find(|r| r["version"] == 2)).cloned().expect("v2")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while v2()["status"] == "pending" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let v2 = v2();
    assert_eq!(v2["status"], "failed", "the orphaned hook made v2 current: {v2}");
    assert!(v2["error"].as_str().is_some_and(|e| e.contains("gateway that ran this push is gone")), "{v2}");
    gateway.restart();
    v1_serves_and_no_lock_is_left(&gateway, &admin, &app, &url);
    assert_eq!(containers_of(&app), vec![format!("nap-{app}-v1-web.1")], "v2's instance is left");
}

#[test]
fn dockerd_restarting_mid_build_refuses_the_push_and_the_next_push_works() {
    let mut dockerd = Dockerd::start();
    let docker_host = dockerd.docker_host();
    // Its bridges are in this host's namespace, where the shared daemon's
    // are: app networks from a pool of its own.
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{REGISTRY}\"\napp_subnets = \"10.198.0.0/16\"\n"))
        .env(&[("DOCKER_HOST", &docker_host)])
        .start();
    let admin = gateway.user("admin");
    let app = unique("dockerd");
    let repo = AppRepo::new(AppKind::Web);
    let url = serving_v1(&gateway, &admin, &app, &repo);

    repo.become_kind(AppKind::SlowBuild);
    let push = Running::new(repo.spawn_push(&gateway, &admin, &app, "master")).wait_for_line("building slowly");
    dockerd.stop();
    let refused = push.finish();
    refused.assert_failed_with("pre-receive hook declined");
    // Either dockerd says why as it stops, or it is gone before it can.
    let reasons =
        ["remote:  !     build failed: ", "remote:  !     the build was cut off: the Docker daemon went away ("];
    assert!(reasons.iter().any(|reason| refused.stderr.contains(reason)), "{}", refused.stderr);
    refused.assert_failed_with(&format!("{app} keeps serving v1"));
    dockerd.start_again();
    // dockerd brings v1 back (unless-stopped), at its address.
    v1_serves_and_no_lock_is_left(&gateway, &admin, &app, &url);
    let running = dockerd.docker(&["ps", "--format", "{{.Names}}", "--filter", &format!("label=nap.app={app}")]);
    assert_eq!(running.assert_ok().stdout.trim(), format!("nap-{app}-v1-web.1"));

    repo.become_kind(AppKind::Web);
    repo.commit("index.html", "three\n");
    let again = repo.push(&gateway, &admin, &app, "master");
    again.assert_ok();
    assert!(again.stderr.contains("v3 is live"), "{}", again.stderr);
}
