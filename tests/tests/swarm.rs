//! The swarm runner on a real three-node Docker Swarm: three dockerds, each
//! in a network namespace of its own, on one bridge (`nap_tests::Swarm`),
//! pulling from the test registry; nap's router routes to the tasks'
//! host-mode ports. Each test has a swarm of its own.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, AuthRegistry, Gateway, Key, Run, Swarm, free_port, get_host, unique};

const DOMAIN: &str = "swarm.test";

struct Rig {
    swarm: Swarm,
    gateway: Gateway,
    admin: Key,
    /// The router's address.
    addr: String,
    app: String,
    repo: AppRepo,
}

/// A swarm, a `nap serve` with the swarm runner and its router, and the
/// upstream app (answering `reply` on /) with `web` tasks, not pushed yet.
fn rig(web: u32) -> Rig {
    let swarm = Swarm::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{}\"\nswarm_monitor = 1\nswarm_timeout = 60\n\
         http_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n",
            nap_tests::REGISTRY,
            swarm.manager_host()
        ))
        .start();
    let admin = gateway.user("admin");
    let app = unique("swarm");
    let repo = AppRepo::new(AppKind::Upstream);
    // `web` tasks, and a health check: the swarm counts a task as running
    // once it answers, and a start-first update waits for that.
    let app_json = format!(
        r#"{{"formation": {{"web": {{"quantity": {web}}}}}, "healthchecks": {{"web": [{{"type": "startup", "path": "/", "attempts": 20, "wait": 1}}]}}}}"#
    );
    repo.commit("app.json", &app_json);
    repo.commit("reply", "swarm v1");
    Rig { swarm, gateway, admin, addr, app, repo }
}

impl Rig {
    fn push(&self) -> Run {
        self.repo.push(&self.gateway, &self.admin, &self.app, "master")
    }

    fn ssh(&self, command: &[&str]) -> Run {
        self.gateway.ssh(&self.admin, "nap", command)
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        get_host(&self.addr, &format!("{}.{DOMAIN}", self.app), path)
    }

    /// The app's tasks the swarm wants running: (node ID, image).
    fn tasks(&self) -> Vec<(String, String)> {
        let service = format!("nap-{}-web", self.app);
        let run = self.swarm.docker(&[
            "service",
            "ps",
            &service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.Image}} {{.CurrentState}}",
        ]);
        run.assert_ok();
        run.stdout
            .lines()
            .filter(|line| line.contains("Running"))
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.to_owned()))
            })
            .collect()
    }

    /// The node IDs the app's running tasks are on (`service ps` names
    /// nodes by host name, which every test node shares: ask each task).
    fn task_nodes(&self) -> Vec<String> {
        let service = format!("nap-{}-web", self.app);
        let ids = self.swarm.docker(&["service", "ps", &service, "--filter", "desired-state=running", "-q"]);
        ids.assert_ok();
        ids.stdout
            .split_whitespace()
            .filter_map(|id| {
                let run = self.swarm.docker(&["inspect", "--format", "{{.NodeID}} {{.Status.State}}", id]);
                let line = run.stdout.trim().to_owned();
                line.ends_with(" running").then(|| line.split_whitespace().next().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// Waits until `done` holds of the app's running tasks' nodes.
    fn until_tasks(&self, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let nodes = self.task_nodes();
            if done(&nodes) {
                return nodes;
            }
            assert!(Instant::now() < deadline, "the tasks never got there: {nodes:?}\n{}", self.gateway.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The bodies the router answers for / in `tries` requests.
    fn bodies(&self, tries: usize) -> BTreeSet<String> {
        (0..tries).filter_map(|_| self.get("/")).map(|(status, body)| format!("{status} {}", body.trim())).collect()
    }

    /// The app's published instances (the router's upstreams), as
    /// `ps --json` addresses of its running web tasks.
    fn routed(&self) -> usize {
        let ps = self.ssh(&["ps", &self.app, "--json"]);
        ps.assert_ok();
        let rows: serde_json::Value = serde_json::from_str(&ps.stdout).expect("ps --json");
        rows.as_array().map_or(0, |rows| rows.iter().filter(|row| row["state"] == "running").count())
    }
}

/// Polls / of the app through the router until `stop`: every answer that
/// is not 200 with one of `bodies`, and how many requests were made.
fn poller(rig: &Rig, bodies: &[&str], stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, usize)> {
    let (addr, host, stop) = (rig.addr.clone(), format!("{}.{DOMAIN}", rig.app), Arc::clone(stop));
    let bodies: Vec<String> = bodies.iter().map(|body| (*body).to_owned()).collect();
    std::thread::spawn(move || {
        let (mut failures, mut total) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(240);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && total < 20_000 {
            total += 1;
            match get_host(&addr, &host, "/") {
                Some((200, body)) if bodies.iter().any(|b| *b == body.trim()) => {}
                other => failures.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (failures, total)
    })
}

#[test]
fn a_push_runs_web_on_several_nodes_behind_the_router_scales_and_is_destroyed() {
    let rig = rig(3);
    let push = rig.push();
    push.assert_ok();
    assert!(push.stderr.contains(&format!("http://{}.{DOMAIN}:", rig.app)), "{}", push.stderr);
    let nodes: BTreeSet<String> = rig.task_nodes().into_iter().collect();
    assert_eq!(rig.task_nodes().len(), 3, "three web tasks run");
    assert!(nodes.len() >= 2, "the tasks spread over at least two nodes: {nodes:?}");
    for node in &nodes {
        assert!(rig.swarm.node(node).is_some(), "{node} is one of the swarm's nodes");
    }
    assert_eq!(rig.bodies(20), BTreeSet::from(["200 swarm v1".to_owned()]));
    // Its tasks join an overlay network of the app's own.
    let network = format!("nap-{}", rig.app);
    let overlay = rig.swarm.docker(&["network", "inspect", "-f", "{{.Id}} {{.Driver}} {{.Attachable}}", &network]);
    let overlay = overlay.assert_ok().stdout.trim().to_owned();
    let joined = rig.swarm.docker(&[
        "service",
        "inspect",
        "-f",
        "{{range .Spec.TaskTemplate.Networks}}{{.Target}}{{end}}",
        &format!("nap-{}-web", rig.app),
    ]);
    assert_eq!(format!("{} overlay true", joined.assert_ok().stdout.trim()), overlay);

    let ps = rig.ssh(&["ps", &rig.app]);
    ps.assert_ok();
    assert!(ps.stdout.contains("TASK"), "{}", ps.stdout);
    for index in 1..=3 {
        assert!(ps.stdout.contains(&format!("web.{index} ")), "{}", ps.stdout);
    }

    rig.ssh(&["ps", "scale", &rig.app, "web=5"]).assert_ok();
    rig.until_tasks(Duration::from_secs(60), |nodes| nodes.len() == 5);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.routed() != 5 {
        assert!(Instant::now() < deadline, "five tasks are never running in ps");
        std::thread::sleep(Duration::from_millis(200));
    }
    rig.ssh(&["ps", "scale", &rig.app, "web=1"]).assert_ok();
    rig.until_tasks(Duration::from_secs(60), |nodes| nodes.len() == 1);
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]));

    let logs = rig.ssh(&["logs", &rig.app]);
    logs.assert_ok();
    assert!(logs.stdout.contains("app[web.1]: "), "{}", logs.stdout);

    // config set, rollback and restart roll the service like a push.
    rig.ssh(&["config", "set", &rig.app, "REPLY=swarm-config"]).assert_ok();
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm-config".to_owned()]));
    rig.ssh(&["rollback", &rig.app]).assert_ok();
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]));
    let before = rig.ssh(&["ps", &rig.app, "--json"]).stdout;
    rig.ssh(&["restart", &rig.app]).assert_ok();
    let after = rig.ssh(&["ps", &rig.app, "--json"]).stdout;
    assert_ne!(before, after, "restart starts a fresh task");
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]));

    let destroyed = rig.ssh(&["apps", "destroy", &rig.app, "--force"]);
    destroyed.assert_ok();
    assert!(destroyed.stdout.contains("removed 1 service(s)"), "{destroyed:?}");
    let services = rig.swarm.docker(&["service", "ls", "--filter", &format!("label=nap.app={}", rig.app), "-q"]);
    services.assert_ok();
    assert_eq!(services.stdout.trim(), "", "no service is left");
    let overlay_gone = || !rig.swarm.docker(&["network", "inspect", &network]).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !overlay_gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(overlay_gone(), "the app's overlay is gone");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.get("/").map(|(status, _)| status) != Some(404) {
        assert!(Instant::now() < deadline, "the router still routes a destroyed app");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn v2_rolls_out_start_first_with_no_failed_request_and_a_crashing_v3_is_rolled_back() {
    let rig = rig(3);
    rig.push().assert_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let load = poller(&rig, &["swarm v1", "swarm v2"], &stop);
    std::thread::sleep(Duration::from_millis(500));
    rig.repo.commit("reply", "swarm v2");
    rig.push().assert_ok();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (failures, total) = load.join().expect("poller");
    assert!(total > 100, "the load ran ({total} requests)");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(rig.bodies(20), BTreeSet::from(["200 swarm v2".to_owned()]), "only v2 answers once the push is done");
    let service = format!("nap-{}-web", rig.app);
    let inspect = rig.swarm.docker(&[
        "service",
        "inspect",
        &service,
        "--format",
        "{{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.FailureAction}} {{.PreviousSpec.UpdateConfig.Order}} {{.UpdateStatus.State}}",
    ]);
    inspect.assert_ok();
    assert_eq!(inspect.stdout.trim(), "start-first rollback start-first completed");

    // v3's tasks exit at once: the swarm rolls back, the push is refused.
    rig.repo.become_kind(AppKind::Exits);
    let refused = rig.push();
    assert!(!refused.ok(), "a crashing release is refused:\n{}", refused.stderr);
    eprintln!("{}", refused.stderr.lines().filter(|line| line.contains(" !  ")).collect::<Vec<_>>().join("\n"));
    assert!(refused.stderr.contains("v2"), "the refusal says what keeps serving:\n{}", refused.stderr);
    let images: BTreeSet<String> = rig.tasks().into_iter().map(|(_, image)| image).collect();
    assert_eq!(images.len(), 1, "one image runs: {images:?}");
    assert!(images.iter().all(|image| image.ends_with(":v2")), "the swarm is back on v2: {images:?}");
    assert_eq!(rig.bodies(20), BTreeSet::from(["200 swarm v2".to_owned()]));
    let releases = rig.ssh(&["releases", &rig.app]);
    assert!(releases.stdout.contains("failed"), "{}", releases.stdout);
}

#[test]
fn a_lost_node_moves_its_tasks_and_the_router_follows() {
    let mut rig = rig(3);
    rig.push().assert_ok();
    let nodes = rig.task_nodes();
    // A worker with a task: the manager stays.
    let lost = nodes.iter().find(|node| **node != rig.swarm.manager().id).cloned().expect("a task on a worker");
    let stop = Arc::new(AtomicBool::new(false));
    let load = poller(&rig, &["swarm v1"], &stop);
    std::thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    let index = rig.swarm.nodes.iter().position(|node| node.id == lost).expect("the node");
    rig.swarm.nodes[index].stop();
    rig.until_tasks(Duration::from_secs(90), |nodes| nodes.len() == 3 && !nodes.contains(&lost));
    let moved = stopped.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (failures, total) = load.join().expect("poller");
    eprintln!("node lost: tasks rescheduled after {moved:?}; {} of {total} requests failed", failures.len());
    // Only requests in flight to the lost node may fail: a handful at most.
    assert!(failures.len() <= 5, "{} of {total} failed: {failures:?}", failures.len());
    assert_eq!(rig.bodies(20), BTreeSet::from(["200 swarm v1".to_owned()]));
}

#[test]
fn placement_pins_tasks_and_a_node_that_cannot_pull_is_named() {
    let rig = rig(2);
    let worker = rig.swarm.nodes[1].id.clone();
    rig.swarm.docker(&["node", "update", "--label-add", "zone=a", &worker]).assert_ok();
    rig.push().assert_ok();
    let refused = rig.ssh(&["placement", &rig.app, "node.hostname==x"]);
    assert!(!refused.ok());
    assert!(refused.stderr.contains("not by host name"), "{}", refused.stderr);
    rig.ssh(&["placement", &rig.app, "node.labels.zone==a"]).assert_ok();
    let nodes = rig.until_tasks(Duration::from_secs(60), |nodes| nodes.len() == 2);
    assert!(nodes.iter().all(|node| *node == worker), "every task runs on the zone=a node: {nodes:?}");
    let shown = rig.ssh(&["placement", &rig.app]);
    assert_eq!(shown.stdout.trim(), "node.labels.zone==a");
    // The log names the constraints (no secret), where `config set` values are masked.
    let said = format!("command=placement {} 'node.labels.zone==a'", rig.app);
    let log = rig.gateway.log_until(|log| log.contains(&said));
    assert!(log.contains(&said), "{log}");
    assert!(log.contains("runner=swarm"), "the start-up line names the runner");
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]));
    // Constraints no node meets are refused, and the previous ones stay.
    let nowhere = rig.ssh(&["placement", &rig.app, "node.labels.zone==nowhere"]);
    assert!(!nowhere.ok());
    assert!(nowhere.stderr.contains("no node may run"), "{}", nowhere.stderr);
    assert_eq!(rig.ssh(&["placement", &rig.app]).stdout.trim(), "node.labels.zone==a");
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]));
    rig.ssh(&["placement", &rig.app, "node.labels.zone==a"]).assert_ok();

    // The zone=a node loses the registry: v2 cannot be pulled there.
    let netns = rig.swarm.nodes[1].netns.clone();
    let blocked: Run = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["iptables", "-I", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", "5000", "-j", "REJECT"])
        .output()
        .expect("iptables")
        .into();
    blocked.assert_ok();
    rig.repo.commit("reply", "swarm v2");
    let refused = rig.push();
    assert!(!refused.ok(), "{}", refused.stderr);
    eprintln!("{}", refused.stderr.lines().filter(|line| line.contains(" !  ")).collect::<Vec<_>>().join("\n"));
    let line = refused.stderr.lines().find(|line| line.contains("could not pull")).unwrap_or_default();
    assert!(line.contains(&format!("node {worker}")) && line.contains(":v2"), "{}", refused.stderr);
    assert_eq!(rig.bodies(10), BTreeSet::from(["200 swarm v1".to_owned()]), "v1 keeps serving");
}

#[test]
fn a_swarm_host_that_is_no_manager_or_not_there_refuses_the_push_in_one_line() {
    for (host, said) in [
        ("unix:///var/run/docker.sock", "is not a swarm manager"),
        ("unix:///nonexistent/docker.sock", "swarm manager unix:///nonexistent/docker.sock"),
        ("ssh://manager", "swarm_host \"ssh://manager\": use unix:///PATH or tcp://HOST:PORT"),
    ] {
        let gateway = Gateway::builder()
            .settings(&format!("registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{host}\"\n", nap_tests::REGISTRY))
            .start();
        let admin = gateway.user("admin");
        let app = unique("noswarm");
        let push = AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master");
        assert!(!push.ok(), "{}", push.stderr);
        let refusals: Vec<&str> = push.stderr.lines().filter(|line| line.contains(" !  ")).collect();
        eprintln!("{}", refusals.join("\n"));
        assert!(refusals.iter().any(|line| line.contains(said)), "{host}: {}", push.stderr);
        assert!(gateway.ssh(&admin, "nap", &["apps"]).stdout.lines().all(|line| !line.contains(&app)));
    }
}

#[test]
fn nodes_pull_from_a_registry_that_wants_a_password_with_the_credentials_nap_sends() {
    let registry = AuthRegistry::start("deployer", "s3cret-pull");
    let swarm = Swarm::start();
    let port: u16 = registry.address.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port");
    swarm.forward(port);
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nregistry_username = \"deployer\"\nregistry_password = \"s3cret-pull\"\n\
         runner = \"swarm\"\nswarm_host = \"{}\"\nswarm_monitor = 1\n",
            registry.address,
            swarm.manager_host()
        ))
        .start();
    let admin = gateway.user("admin");
    let app = unique("swarm-auth");
    let repo = AppRepo::new(AppKind::Upstream);
    repo.commit("app.json", r#"{"formation": {"web": {"quantity": 2}}}"#);
    let push = repo.push(&gateway, &admin, &app, "master");
    push.assert_ok();
    assert!(!push.stderr.contains("s3cret-pull"), "the password is never shown");
    let ps = gateway.ssh(&admin, "nap", &["ps", &app, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&ps.stdout).expect("ps --json");
    let running = rows.as_array().map_or(0, |rows| rows.iter().filter(|row| row["state"] == "running").count());
    assert_eq!(running, 2, "{}", ps.stdout);
    assert!(!gateway.log().contains("s3cret-pull"), "the password is never logged");
}

#[test]
fn a_manager_over_tcp_with_tls_runs_the_release() {
    let swarm = Swarm::start_tls();
    let (host, certs) = swarm.client_certs().expect("TLS");
    let gateway = Gateway::builder().settings(&format!(
        "registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{host}\"\nswarm_cert_path = \"{}\"\nswarm_monitor = 1\n",
        nap_tests::REGISTRY,
        certs.display()
    )).start();
    let admin = gateway.user("admin");
    let app = unique("swarm-tls");
    let repo = AppRepo::new(AppKind::Upstream);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    let services =
        swarm.docker(&["service", "ls", "--filter", &format!("label=nap.app={app}"), "--format", "{{.Name}}"]);
    assert_eq!(services.stdout.trim(), format!("nap-{app}-web"));

    // Without the client certificate the manager refuses, in one line.
    let plain = Gateway::builder()
        .settings(&format!("registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{host}\"\n", nap_tests::REGISTRY))
        .start();
    let admin = plain.user("admin");
    let push = AppRepo::new(AppKind::Upstream).push(&plain, &admin, &unique("swarm-notls"), "master");
    assert!(!push.ok());
    let refusal: Vec<&str> = push.stderr.lines().filter(|line| line.contains(" !  ")).collect();
    eprintln!("{}", refusal.join("\n"));
    assert!(refusal.iter().any(|line| line.contains(&format!("swarm manager {host}"))), "{}", push.stderr);
}

#[test]
fn a_release_phase_is_refused_on_the_swarm_in_one_line_and_leaves_nothing() {
    let swarm = Swarm::start_with(1);
    let gateway = Gateway::builder()
        .settings(&format!(
            "registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{}\"\n",
            nap_tests::REGISTRY,
            swarm.manager_host()
        ))
        .start();
    let admin = gateway.user("admin");
    let app = unique("swarm-release");
    let push = AppRepo::new(AppKind::Procfile).push(&gateway, &admin, &app, "master");
    assert!(!push.ok());
    assert!(push.stderr.contains("the release phase is not available on the swarm runner yet"), "{}", push.stderr);
    let services = swarm.docker(&["service", "ls", "-q"]);
    assert_eq!(services.stdout.trim(), "", "no service is left");
}

#[test]
fn each_process_type_is_a_service_of_its_own_and_a_type_scaled_to_zero_goes() {
    let rig = rig(1);
    rig.repo.commit(
        "Procfile",
        "web: /bin/nap-test-upstream\nworker: sh -c \"while true; do echo working; sleep 1; done\"\n",
    );
    rig.repo.commit(
        "app.json",
        r#"{"formation": {"web": {"quantity": 1}, "worker": {"quantity": 2}}, "healthchecks": {"web": [{"type": "startup", "path": "/", "attempts": 20, "wait": 1}]}}"#,
    );
    rig.push().assert_ok();
    let services = |rig: &Rig| {
        let run = rig.swarm.docker(&[
            "service",
            "ls",
            "--filter",
            &format!("label=nap.app={}", rig.app),
            "--format",
            "{{.Name}} {{.Replicas}}",
        ]);
        run.assert_ok();
        let mut lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let app = &rig.app;
    assert_eq!(services(&rig), [format!("nap-{app}-web 1/1"), format!("nap-{app}-worker 2/2")]);
    assert_eq!(rig.bodies(5), BTreeSet::from(["200 swarm v1".to_owned()]));
    let ps = rig.ssh(&["ps", app]);
    assert!(ps.stdout.contains("worker.2 "), "{}", ps.stdout);
    rig.ssh(&["ps", "scale", app, "worker=0"]).assert_ok();
    assert_eq!(services(&rig), [format!("nap-{app}-web 1/1")]);
}
