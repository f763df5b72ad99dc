//! Each app on a network of its own (`nap-APP`): an app's one-offs and
//! instances reach its other instances, and nothing of another app's, while
//! nap's router reaches them all. Its subnet is claimed from `app_subnets`,
//! past the subnets this host's Docker holds; an installation from before
//! app networks moves each app to its own at its next release, with no
//! failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Gateway, Key, PrivateEtcd, REGISTRY, Run, docker, free_port, get_host, unique};

const DOMAIN: &str = "nap.test";
/// What `nc` sends: one HTTP/1.0 request, answered and closed.
const REQUEST: &str = "GET / HTTP/1.0\r\n\r\n";

/// A gateway whose router listens on a port of its own (`extra`: more
/// nap.toml lines); its router's address.
fn routed_gateway(extra: &str) -> (Gateway, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::builder()
        .settings(&format!("registry = \"{REGISTRY}\"\nhttp_listen = \"{addr}\"\ndomain = \"{DOMAIN}\"\n{extra}"))
        .start();
    (gateway, addr)
}

/// The `IP:PORT` of each running web instance of `app`, as `ps` says.
fn addresses(gateway: &Gateway, admin: &Key, app: &str) -> Vec<String> {
    let ps = gateway.ssh(admin, "nap", &["ps", app, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&ps.assert_ok().stdout).expect("ps --json");
    rows.as_array()
        .expect("rows")
        .iter()
        .filter(|row| row["type"] == "web")
        .filter_map(|row| row["address"].as_str().map(str::to_owned))
        .collect()
}

/// `run FROM -- nc -w 2 IP PORT`, sending one request to `address`.
fn one_off_to(gateway: &Gateway, admin: &Key, from: &str, address: &str) -> Run {
    let (ip, port) = address.split_once(':').expect("IP:PORT");
    gateway.ssh_with_input(admin, "nap", &["run", from, "--", "nc", "-w", "2", ip, port], REQUEST)
}

/// The same request from inside the running container `container`.
fn instance_to(container: &str, address: &str) -> Run {
    let (ip, port) = address.split_once(':').expect("IP:PORT");
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}");
    docker(&["exec", container, "sh", "-c", &script])
}

/// The subnet Docker has for network `name`, if it exists.
fn subnet_of(name: &str) -> Option<String> {
    let inspected = docker(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", name]);
    inspected.ok().then(|| inspected.stdout.trim().to_owned())
}

/// Whether `address` (`IP:PORT`) lies in `subnet` (`A.B.C.D/BITS`).
fn within(address: &str, subnet: &str) -> bool {
    let ip: std::net::Ipv4Addr = address.split(':').next().and_then(|ip| ip.parse().ok()).expect("an IP");
    let (base, bits) = subnet.split_once('/').expect("a subnet");
    let (base, bits): (std::net::Ipv4Addr, u32) = (base.parse().expect("base"), bits.parse().expect("bits"));
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

#[test]
fn an_app_reaches_its_own_instances_and_nothing_of_another_apps_while_the_router_reaches_both() {
    let (gateway, addr) = routed_gateway("");
    let admin = gateway.user(&unique("admin"));
    let (a, b) = (unique("neta"), unique("netb"));
    let repo_a = AppRepo::new(AppKind::Web);
    repo_a.push(&gateway, &admin, &a, "master").assert_ok();
    let repo_b = AppRepo::new(AppKind::Web);
    repo_b.commit("index.html", "b's own page\n");
    repo_b.push(&gateway, &admin, &b, "master").assert_ok();
    gateway.ssh(&admin, "nap", &["ps", "scale", &a, "web=2"]).assert_ok();

    let (subnet_a, subnet_b) = (subnet_of(&format!("nap-{a}")), subnet_of(&format!("nap-{b}")));
    let (subnet_a, subnet_b) = (subnet_a.expect("a's network"), subnet_b.expect("b's network"));
    assert_ne!(subnet_a, subnet_b, "each app has a subnet of its own");
    let (of_a, of_b) = (addresses(&gateway, &admin, &a), addresses(&gateway, &admin, &b));
    assert_eq!(of_a.len(), 2, "{of_a:?}");
    assert_eq!(of_b.len(), 1, "{of_b:?}");
    assert!(of_a.iter().all(|address| within(address, &subnet_a)), "{of_a:?} in {subnet_a}");
    assert!(within(&of_b[0], &subnet_b), "{of_b:?} in {subnet_b}");

    // A one-off of A reaches A's instances, both of them.
    for address in &of_a {
        let reached = one_off_to(&gateway, &admin, &a, address);
        assert!(reached.assert_ok().stdout.contains("hello from web"), "{address}: {reached:?}");
    }
    // Nothing of A reaches B: neither a one-off nor an instance.
    let refused = one_off_to(&gateway, &admin, &a, &of_b[0]);
    assert!(!refused.ok() && !refused.stdout.contains("b's own page"), "{refused:?}");
    let first_of_a = format!("nap-{a}-v1-web.1");
    let reached = instance_to(&first_of_a, &of_a[1]);
    assert!(reached.assert_ok().stdout.contains("hello from web"), "instance to instance: {reached:?}");
    let refused = instance_to(&first_of_a, &of_b[0]);
    assert!(!refused.ok() && !refused.stdout.contains("b's own page"), "{refused:?}");
    // Nor does B reach A.
    let refused = one_off_to(&gateway, &admin, &b, &of_a[0]);
    assert!(!refused.ok() && !refused.stdout.contains("hello from web"), "{refused:?}");

    // The router, on the host, reaches every one of them.
    for (app, body) in [(&a, "hello from web"), (&b, "b's own page")] {
        let answer = get_host(&addr, &format!("{app}.{DOMAIN}"), "/");
        assert_eq!(answer.map(|(status, got)| (status, got.trim().to_owned())), Some((200, body.to_owned())));
    }

    // `apps destroy` takes the app's network with it.
    gateway.ssh(&admin, "nap", &["apps", "destroy", &b, "--force"]).assert_ok();
    assert_eq!(subnet_of(&format!("nap-{b}")), None, "b's network is gone");
    assert!(subnet_of(&format!("nap-{a}")).is_some(), "a's stays");
}

#[test]
fn a_subnet_docker_holds_is_passed_over_and_one_it_refuses_is_claimed_again() {
    // A pool of four /26 of this test's own.
    let octet = rand::random::<u8>();
    let pool = format!("10.126.{octet}");
    let (gateway, _addr) = routed_gateway(&format!("app_subnets = \"{pool}.0/24\"\napp_subnet_prefix = 26\n"));
    let foreign = |n: u8, start: u8| {
        let name = unique(&format!("foreign{n}"));
        docker(&["network", "create", "--subnet", &format!("{pool}.{start}/26"), &name]).assert_ok();
        gateway.cleanup().command(&["docker", "network", "rm", &name]);
    };
    let admin = gateway.user(&unique("admin"));
    let app = unique("claims");
    // The pool's first subnet is another network's on this host.
    foreign(1, 0);
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let network = format!("nap-{app}");
    assert_eq!(subnet_of(&network).as_deref(), Some(format!("{pool}.64/26").as_str()));
    let address = addresses(&gateway, &admin, &app).pop().expect("an instance");
    assert!(within(&address, &format!("{pool}.64/26")), "{address}");

    // As on a host where the app never ran: its recorded subnet is taken
    // there, so Docker refuses it, and the app claims the next one.
    docker(&["rm", "-f", &format!("nap-{app}-v1-web.1")]).assert_ok();
    docker(&["network", "rm", &network]).assert_ok();
    foreign(2, 64);
    gateway.ssh(&admin, "nap", &["restart", &app]).assert_ok();
    assert_eq!(subnet_of(&network).as_deref(), Some(format!("{pool}.128/26").as_str()));
    let address = addresses(&gateway, &admin, &app).pop().expect("an instance");
    assert!(within(&address, &format!("{pool}.128/26")), "{address}");

    // A pool with no subnet left refuses the push in one line.
    foreign(3, 192);
    let other = unique("nospace");
    let refused = AppRepo::new(AppKind::Web).push(&gateway, &admin, &other, "master");
    refused.assert_failed_with(&format!(
        "no subnet of app_subnets {pool}.0/24 (/26 each) is free for {other}'s network; widen app_subnets"
    ));
    assert_eq!(subnet_of(&format!("nap-{other}")), None, "a refused first push leaves no network");
}

/// A client that polls `host` on the router at `addr` until `stop`; every
/// answer, in order.
fn poller(addr: &str, host: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Option<(u16, String)>>> {
    let (addr, host, stop) = (addr.to_owned(), host.to_owned(), Arc::clone(stop));
    std::thread::spawn(move || {
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            answers.push(get_host(&addr, &host, "/"));
            std::thread::sleep(Duration::from_millis(5));
        }
        answers
    })
}

#[test]
fn an_app_from_before_app_networks_moves_to_its_own_at_its_next_release_with_no_failed_request() {
    let etcd = PrivateEtcd::start();
    // The network every app shared, this test's own.
    let shared = unique("nap-shared");
    let subnet = format!("172.30.{}.0/24", 200 + rand::random::<u8>() % 50);
    let (gateway, addr) =
        routed_gateway(&format!("store = \"{}\"\nnetwork = \"{shared}\"\nnetwork_subnet = \"{subnet}\"\n", etcd.url()));
    gateway.cleanup().command(&["docker", "network", "rm", &shared]);
    let admin = gateway.user(&unique("admin"));
    let app = unique("moving");
    let host = format!("{app}.{DOMAIN}");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();

    // What nap left before app networks: the instance on the shared
    // network (its labels as nap set them then, none naming a network),
    // published at its address there, and no subnet claimed for the app.
    let container = format!("nap-{app}-v1-web.1");
    docker(&["rm", "-f", &container]).assert_ok();
    docker(&["network", "rm", &format!("nap-{app}")]).assert_ok();
    etcd.etcdctl(&["del", "--prefix", "/nap/subnets/"]).assert_ok();
    docker(&["network", "create", "--subnet", &subnet, "--label", "nap.network=apps", &shared]).assert_ok();
    let old_ip = subnet.replace(".0/24", ".10");
    let labels = ["nap.app", "nap.release=1", "nap.restarts=0", "nap.process=web", "nap.index=1", "nap.port=5000"];
    let mut run = vec!["run", "-d", "--name", &container, "--network", &shared, "--ip", &old_ip, "--init"];
    run.extend(["--restart", "unless-stopped", "-e", "PORT=5000"]);
    let app_label = format!("nap.app={app}");
    for label in labels {
        run.extend(["--label", if label == "nap.app" { &app_label } else { label }]);
    }
    let image = format!("{REGISTRY}/{app}:v1");
    run.push(&image);
    docker(&run).assert_ok();
    let ip_key = format!("/nap/apps/{app}/instances/{container}/ip");
    etcd.etcdctl(&["put", &ip_key, &old_ip]).assert_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses(&gateway, &admin, &app) != [format!("{old_ip}:5000")]
        || get_host(&addr, &host, "/").is_none_or(|(status, _)| status != 200)
        || etcd.etcdctl(&["get", "--print-value-only", &ip_key]).stdout.trim() != old_ip
    {
        assert!(Instant::now() < deadline, "the old instance serves at {old_ip}: {}", gateway.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Its next release moves it, while a client polls it.
    let stop = Arc::new(AtomicBool::new(false));
    let polling = poller(&addr, &host, &stop);
    std::thread::sleep(Duration::from_millis(300));
    gateway.ssh(&admin, "nap", &["config", "set", &app, "MOVED=yes"]).assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answers = polling.join().expect("poller");
    assert!(answers.len() > 50, "the client polled throughout: {} answers", answers.len());
    let failed: Vec<_> = answers
        .iter()
        .filter(|answer| {
            !answer.as_ref().is_some_and(|(status, body)| *status == 200 && body.trim() == "hello from web")
        })
        .collect();
    assert!(failed.is_empty(), "{} of {} requests failed, e.g. {:?}", failed.len(), answers.len(), failed.first());

    let own = subnet_of(&format!("nap-{app}")).expect("the app's own network");
    let moved = addresses(&gateway, &admin, &app);
    assert!(moved.len() == 1 && within(&moved[0], &own), "{moved:?} in {own}");
    assert!(!docker(&["inspect", &container]).ok(), "the old instance is retired");
    assert_eq!(subnet_of(&shared), None, "the shared network goes once nothing is on it");
}

/// What the services nap will link to apps (a database, a cache) rely on: a
/// container joins each app's network it serves, and each app reaches it
/// there, while the apps still reach nothing of each other.
#[test]
fn a_container_that_serves_two_apps_joins_each_ones_network() {
    let (gateway, _addr) = routed_gateway("");
    let admin = gateway.user(&unique("admin"));
    let (a, b) = (unique("svca"), unique("svcb"));
    for app in [&a, &b] {
        AppRepo::new(AppKind::Web).push(&gateway, &admin, app, "master").assert_ok();
    }
    let service = unique("service");
    gateway.cleanup().container(&service);
    let serve = ["sh", "-c", "echo shared service > /index.html; exec httpd -f -p 6000 -h /"];
    let mut run = vec!["run", "-d", "--name", &service, "nap/busybox"];
    run.extend(serve);
    docker(&run).assert_ok();

    // Joined through the runner, as nap will join a linked service.
    let data = tempfile::tempdir().expect("data dir");
    let settings = nap::settings::Settings {
        store: nap_state::StoreSettings { data_dir: Some(data.path().into()), ..Default::default() },
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let ctx = nap::context::Context::open(settings).await.expect("context");
        let runner = ctx.docker_runner().await.expect("docker");
        for app in [&a, &b] {
            let network = nap_runner::AppNetwork::of_app(app, subnet_of(&format!("nap-{app}")));
            runner.attach(&service, &network).await.expect("attach");
            runner.attach(&service, &network).await.expect("attaching twice is no error");
        }
    });

    let address_on = |app: &str| {
        let format = format!("{{{{(index .NetworkSettings.Networks \"nap-{app}\").IPAddress}}}}:6000");
        docker(&["inspect", "-f", &format, &service]).assert_ok().stdout.trim().to_owned()
    };
    for app in [&a, &b] {
        let reached = one_off_to(&gateway, &admin, app, &address_on(app));
        assert!(reached.assert_ok().stdout.contains("shared service"), "{app}: {reached:?}");
    }
    let of_b = addresses(&gateway, &admin, &b).pop().expect("b's instance");
    let refused = one_off_to(&gateway, &admin, &a, &of_b);
    assert!(!refused.ok(), "the service joins a and b; a still does not reach b: {refused:?}");
}
