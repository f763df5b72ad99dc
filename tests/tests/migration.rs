//! The commiter flow across two hosts: a container snapshotted on host A
//! (this machine's dockerd) is restored on host B (a second dockerd in its
//! own network namespace, `DockerHost`), sharing the registry and etcd.

use std::collections::BTreeSet;

use nap_tests::{AppKind, AppRepo, DockerHost, Gateway, Key, REGISTRY, docker, etcd_endpoint, etcdctl, unique};

#[test]
fn a_container_committed_on_one_host_is_restored_on_another_with_its_files_and_ip() {
    let root = format!("/{}", unique("commiter"));
    let shared =
        format!("store = \"etcd://{}\"\ncommiter_root = \"{root}\"\nregistry = \"{REGISTRY}\"\n", etcd_endpoint());
    let host_a =
        Gateway::builder().settings(&format!("{shared}host_ip = \"10.200.1.1\"\nhost_name = \"host-a\"\n")).start();
    host_a.cleanup().etcd_prefix(format!("{root}/"));
    let host_b_docker = DockerHost::start();
    let docker_host = host_b_docker.docker_host();
    let host_b = Gateway::builder()
        .settings(&format!("{shared}host_ip = \"10.200.1.2\"\nhost_name = \"host-b\"\n"))
        .env(&[("DOCKER_HOST", docker_host.as_str())])
        .start();
    // Keys live in the shared store: one added on A is known on B.
    let admin = Key::generate();
    host_a.nap(&["keys", "add", &unique("admin"), "--admin"], &admin.public_text()).assert_ok();

    let app = unique("migrate");
    host_a.cleanup().images(format!("{REGISTRY}/{app}-web-*"));
    AppRepo::new(AppKind::Web).push(&host_a, &admin, &app, "master").assert_ok();
    let container = format!("nap-{app}-v1-web.1");
    docker(&["exec", &container, "sh", "-c", "echo written on host A > /www/state.txt"]).assert_ok();
    let import = format!("App: {app}\nComponent: web\nRepository: {REGISTRY}\nIps:\n  - Ip: 10.200.1.1\n");
    host_a.ssh_with_input(&admin, "nap", &["import", "--commit", "1"], &import).assert_ok();
    let committed = host_a.ssh(&admin, "nap", &["commit", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&committed.assert_ok().stdout).expect("json");
    let image = rows[0]["image"].as_str().expect("image").to_owned();
    let ip = rows[0]["ip"].as_str().expect("ip").to_owned();
    let ip_on_a = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &container]);
    assert_eq!(ip_on_a.stdout.trim(), ip);

    // Host A is lost; B restores the snapshot from the registry.
    host_a.ssh(&admin, "nap", &["apps", "destroy", &app, "--force"]).assert_ok();
    let restored = host_b.ssh(&admin, "nap", &["restore", &image, "--json"]);
    let restored: serde_json::Value = serde_json::from_str(&restored.assert_ok().stdout).expect("json");
    let on_b = restored["container"].as_str().expect("container");

    let file = host_b_docker.docker(&["exec", on_b, "cat", "/www/state.txt"]);
    assert_eq!(file.assert_ok().stdout, "written on host A\n", "the file written on A is in B's container");
    let ip_on_b = host_b_docker.docker(&[
        "inspect",
        "-f",
        "{{range $name, $n := .NetworkSettings.Networks}}{{$name}} {{$n.IPAddress}}{{end}}",
        on_b,
    ]);
    assert_eq!(
        ip_on_b.stdout.trim(),
        format!("nap-{app} {ip}"),
        "B's container has the IP recorded on A, on its app's network"
    );
    let recorded = etcdctl(&["get", "--print-value-only", &format!("{root}/ips/{image}")]);
    assert_eq!(recorded.stdout.trim(), ip);
    let served = host_b_docker.exec(&["curl", "-fsS", "--max-time", "10", &format!("http://{ip}:5000/state.txt")]);
    assert_eq!(served.assert_ok().stdout, "written on host A\n", "B serves it at the same address");
    assert!(docker(&["ps", "-aq", "--filter", &format!("name={on_b}")]).stdout.trim().is_empty(), "not on host A");

    // The keys are exactly the documented ones (docs/state.md), no more.
    let keys = etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/")]);
    let keys: BTreeSet<&str> = keys.stdout.lines().filter(|l| !l.is_empty()).collect();
    let expected: BTreeSet<String> = [
        format!("{root}/images/10.200.1.1/{app}/web/state"),
        format!("{root}/images/10.200.1.1/{app}/web/repository"),
        format!("{root}/ips/{image}"),
        format!("{root}/networks/{image}"),
        format!("{root}/takeover/{app}/web-{ip}"),
    ]
    .into();
    assert_eq!(keys, expected.iter().map(String::as_str).collect());
    let state = etcdctl(&["get", "--print-value-only", &format!("{root}/images/10.200.1.1/{app}/web/state")]);
    assert_eq!(state.stdout.trim(), "1");
    let takeover = etcdctl(&["get", "--print-value-only", &format!("{root}/takeover/{app}/web-{ip}")]);
    assert!(takeover.stdout.contains(&format!("image: \"{image}\"")), "{}", takeover.stdout);
}
