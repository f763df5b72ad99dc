//! The swarm runner's benchmark driver (`scripts/bench-swarm.sh` runs it,
//! as root, with the test services up): on a real three-node swarm
//! (`nap_tests::Swarm`) and a `nap serve` with the swarm runner and its
//! router, an app with `web=3` and a health check.
//!
//! - `bench-swarm RUNS`: RUNS rounds, each (A) `git push` of a new commit
//!   (built, pushed, rolled out by nap) timed from the push until all three
//!   replicas answer the new reply, then (B) the same image rolled out by
//!   hand from the previous one, after the nodes dropped it (so they pull
//!   it, as in A): `docker service update --detach --image` on the
//!   manager, timed until all three replicas answer; then (C) a
//!   worker that runs a task is stopped under a polling load through the
//!   router: the time until the swarm runs three tasks elsewhere, the time
//!   of the last request the router sent to the lost node, and the failed
//!   requests. Prints the results as Markdown on stdout, progress on stderr.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nap_tests::{AppKind, AppRepo, Swarm, free_port, get_host, unique};

const DOMAIN: &str = "bench.test";
const REPLICAS: usize = 3;

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5);
    let started = Instant::now();
    let mut swarm = Swarm::start();
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = nap_tests::Gateway::builder().settings(&format!(
        "registry = \"{}\"\nrunner = \"swarm\"\nswarm_host = \"{}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n",
        nap_tests::REGISTRY,
        swarm.manager_host()
    )).start();
    let admin = gateway.user("admin");
    let app = unique("bench-swarm");
    let repo = AppRepo::new(AppKind::Upstream);
    repo.commit(
        "app.json",
        r#"{"formation": {"web": {"quantity": 3}}, "healthchecks": {"web": [{"type": "startup", "path": "/", "attempts": 20, "wait": 1}]}}"#,
    );
    repo.commit("reply", "bench v0");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    let service = format!("nap-{app}-web");
    let replicas = Replicas { service: service.clone() };
    assert!(replicas.all_answer(&swarm, "bench v0"), "v0 does not answer on every replica");

    let (pushed, by_hand) = rollouts(&swarm, &gateway, &admin, &app, &repo, &replicas, runs);
    let lost = lose_a_node(&mut swarm, &gateway, &admin, &app, &addr, &replicas, runs);
    report(&swarm, runs, started, &pushed, &by_hand, &lost);
}

/// (A) and (B), `runs` times: the times until all replicas answered.
fn rollouts(
    swarm: &Swarm,
    gateway: &nap_tests::Gateway,
    admin: &nap_tests::Key,
    app: &str,
    repo: &AppRepo,
    replicas: &Replicas,
    runs: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let service = &replicas.service;
    let (mut pushed, mut by_hand) = (Vec::new(), Vec::new());
    let mut previous = image_of(swarm, service);
    for round in 1..=runs {
        let body = format!("bench v{round}");
        repo.commit("reply", &body);
        let push_started = Instant::now();
        let mut push = repo.spawn_push(gateway, admin, app, "master");
        // Each of the push's lines with when it came, to see where the time goes.
        let stderr = push.stderr.take().expect("piped");
        let lines = std::thread::spawn(move || {
            use std::io::BufRead;
            let timed: Vec<String> = std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .map(|line| format!("{:6.2} s {}", push_started.elapsed().as_secs_f64(), line.trim_end()))
                .collect();
            timed
        });
        let answered = replicas.until_all_answer(swarm, &body, push_started);
        let status = push.wait().expect("push");
        let timed = lines.join().expect("push output");
        assert!(status.success(), "push {round} failed:\n{}", timed.join("\n"));
        for line in timed.iter().filter(|line| !line.contains("--->") && !line.contains("Step ")) {
            eprintln!("  {line}");
        }
        pushed.push(answered);
        let image = image_of(swarm, service);
        eprintln!("round {round}: nap push {answered:?} ({image})");

        // The same image by hand: back to the previous one, then timed.
        swarm.docker(&["service", "update", "--detach", "--image", &previous, service]).assert_ok();
        let back = format!("bench v{}", round - 1);
        replicas.until_all_answer(swarm, &back, Instant::now());
        replicas.until_converged(swarm);
        // As for nap's rollout, the nodes have the previous image, not this
        // one: they pull it as part of the rollout.
        for node in &swarm.nodes {
            node.docker(&["container", "prune", "--force"]);
            node.docker(&["image", "rm", &image]);
        }
        let hand_started = Instant::now();
        swarm.docker(&["service", "update", "--detach", "--image", &image, service]).assert_ok();
        let answered = replicas.until_all_answer(swarm, &body, hand_started);
        replicas.until_converged(swarm);
        by_hand.push(answered);
        eprintln!("round {round}: by hand {answered:?}");
        previous = image;
    }

    (pushed, by_hand)
}

/// What (C) measured.
struct NodeLoss {
    rescheduled: Duration,
    /// Seconds from the stop to the last request sent to the lost node.
    last_to_lost: Option<f64>,
    failed: usize,
    total: usize,
}

/// (C): a worker that runs a task stops under a polling load.
fn lose_a_node(
    swarm: &mut Swarm,
    gateway: &nap_tests::Gateway,
    admin: &nap_tests::Key,
    app: &str,
    addr: &str,
    replicas: &Replicas,
    runs: usize,
) -> NodeLoss {
    let lost = replicas
        .tasks(swarm)
        .into_iter()
        .map(|(node, _)| node)
        .find(|node| *node != swarm.manager().id)
        .expect("a task on a worker");
    let lost_address = swarm.node(&lost).expect("the node").address.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let expected = format!("bench v{runs}");
    let load = {
        let (addr, host, stop, expected) =
            (addr.to_owned(), format!("{app}.{DOMAIN}"), Arc::clone(&stop), expected.clone());
        std::thread::spawn(move || {
            let (mut failed, mut total) = (0_usize, 0_usize);
            while !stop.load(Ordering::Relaxed) {
                total += 1;
                if !matches!(get_host(&addr, &host, "/"), Some((200, body)) if body.trim() == expected) {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (failed, total)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let stopped_at = SystemTime::now();
    let stopped = Instant::now();
    let index = swarm.nodes.iter().position(|node| node.id == lost).expect("the node");
    swarm.nodes[index].stop();
    let deadline = Instant::now() + Duration::from_secs(120);
    let rescheduled = loop {
        let nodes: Vec<String> = replicas.tasks(swarm).into_iter().map(|(node, _)| node).collect();
        if nodes.len() == REPLICAS && !nodes.contains(&lost) {
            break stopped.elapsed();
        }
        assert!(Instant::now() < deadline, "the lost node's tasks were never rescheduled");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (failed, total) = load.join().expect("load");
    // The router's own access lines: the last one sent to the lost node.
    let lines = gateway.ssh(admin, "nap", &["logs", app, "--router"]);
    lines.assert_ok();
    let since_stop = |line: &str| -> Option<f64> {
        let at = line.split_whitespace().next()?;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
        let stopped = time::OffsetDateTime::from(stopped_at);
        Some((at - stopped).as_seconds_f64())
    };
    let last_to_lost = lines
        .stdout
        .lines()
        .filter(|line| line.contains(&format!("upstream={lost_address}:")))
        .filter_map(since_stop)
        .fold(None, |last: Option<f64>, at| Some(last.map_or(at, |last| last.max(at))));

    swarm.nodes[index].start_again();
    NodeLoss { rescheduled, last_to_lost, failed, total }
}

/// The results, as Markdown.
fn report(swarm: &Swarm, runs: usize, started: Instant, pushed: &[Duration], by_hand: &[Duration], lost: &NodeLoss) {
    let median = |times: &[Duration]| {
        let mut sorted = times.to_vec();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    let (nap, hand) = (median(pushed), median(by_hand));
    let ratio = nap.as_secs_f64() / hand.as_secs_f64();
    let each =
        |times: &[Duration]| times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect::<Vec<_>>().join(", ");
    let seconds = |at: Option<f64>| at.map_or_else(|| "none after the stop".to_owned(), |at| format!("{at:+.2} s"));
    let nodes: BTreeSet<String> = swarm.nodes.iter().map(|node| node.id.clone()).collect();
    println!(
        "Measured by `scripts/bench-swarm.sh` ({runs} rounds) on a three-node swarm ({} nodes, each a dockerd in its own network namespace, Docker {}), `nap serve` (release build) with the swarm runner and its router, runtime {} s. The app: nap-test-upstream with `web=3` and an app.json health check (`/`, 1 s apart), so the swarm's start-first update waits for each new task to answer; the service's update config is nap's (parallelism 1, delay 0, monitor 5 s, start-first) for both ways.\n",
        nodes.len(),
        docker_version(swarm),
        started.elapsed().as_secs()
    );
    println!("| rollout of a new release to 3 replicas | median | each round (s) |");
    println!("|---|---|---|");
    println!(
        "| (A) `git push` of a new commit: built, pushed to the registry, rolled out by nap; until all 3 replicas answer it | {:.2} s | {} |",
        nap.as_secs_f64(),
        each(pushed)
    );
    println!(
        "| (B) the same image rolled out by hand from the previous one, the nodes pulling it as in (A): `docker service update --detach --image` plus polling, until all 3 replicas answer it | {:.2} s | {} |",
        hand.as_secs_f64(),
        each(by_hand)
    );
    println!("| ratio (A) / (B), target ≤ 1.1 | **{ratio:.2}** ({}) | |\n", if ratio <= 1.1 { "pass" } else { "FAIL" });
    println!("| a worker's dockerd stopped under a polling load through the router (GET / every 20 ms) | result |");
    println!("|---|---|");
    println!(
        "| its tasks running on the other nodes (swarm: node down, then rescheduled) | {:.1} s after the stop |",
        lost.rescheduled.as_secs_f64()
    );
    println!("| the last request the router sent to the lost node (its access log) | {} |", seconds(lost.last_to_lost));
    println!("| failed requests (not 200 with the reply) | {} of {} |", lost.failed, lost.total);
}

/// The image the service runs now.
fn image_of(swarm: &Swarm, service: &str) -> String {
    let run = swarm.docker(&["service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", service]);
    run.assert_ok();
    run.stdout.trim().to_owned()
}

fn docker_version(swarm: &Swarm) -> String {
    swarm.docker(&["version", "--format", "{{.Server.Version}}"]).stdout.trim().to_owned()
}

/// The tasks of one service, read through the swarm's manager.
struct Replicas {
    service: String,
}

impl Replicas {
    /// The running tasks the swarm wants running: (node ID, `IP:PORT`).
    fn tasks(&self, swarm: &Swarm) -> Vec<(String, String)> {
        let ids = swarm.docker(&["service", "ps", &self.service, "--filter", "desired-state=running", "-q"]);
        ids.stdout
            .split_whitespace()
            .filter_map(|id| {
                let format =
                    "{{.NodeID}} {{.Status.State}} {{range .Status.PortStatus.Ports}}{{.PublishedPort}} {{end}}";
                let run = swarm.docker(&["inspect", "--format", format, id]);
                let words: Vec<&str> = run.stdout.split_whitespace().collect();
                match words.as_slice() {
                    [node, "running", port, ..] => {
                        let address = &swarm.node(node)?.address;
                        Some(((*node).to_owned(), format!("{address}:{port}")))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Whether exactly three tasks run and each answers `body` on /.
    fn all_answer(&self, swarm: &Swarm, body: &str) -> bool {
        let tasks = self.tasks(swarm);
        tasks.len() == REPLICAS
            && tasks
                .iter()
                .all(|(_, address)| matches!(get_host(address, "bench", "/"), Some((200, got)) if got.trim() == body))
    }

    /// Polls until [`Replicas::all_answer`]; answers the time since `since`.
    fn until_all_answer(&self, swarm: &Swarm, body: &str, since: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.all_answer(swarm, body) {
            assert!(Instant::now() < deadline, "the replicas never all answered {body:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        since.elapsed()
    }

    /// Waits until the swarm calls the service's update done.
    fn until_converged(&self, swarm: &Swarm) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let run = swarm.docker(&["service", "inspect", "--format", "{{.UpdateStatus.State}}", &self.service]);
            if matches!(run.stdout.trim(), "completed" | "" | "<no value>") {
                return;
            }
            assert!(Instant::now() < deadline, "the service's update never completed: {}", run.stdout);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
