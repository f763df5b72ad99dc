//! The commiter flow's setup over real ssh, with its keys in a real etcd:
//! `manage`, `import` (the original tool's YAML, unchanged), `commit`,
//! `takeover` and `restore`.

use nap_tests::{Gateway, Key, etcd_endpoint, etcdctl, unique};

/// A gateway on etcd with a commiter root of its own (deleted when the
/// gateway drops), and an admin key.
fn gateway() -> (Gateway, Key, String) {
    let root = format!("/{}", unique("commiter"));
    let gateway = Gateway::builder()
        .settings(&format!("store = \"etcd://{}\"\ncommiter_root = \"{root}\"\n", etcd_endpoint()))
        .start();
    gateway.cleanup().etcd_prefix(format!("{root}/"));
    let admin = Key::generate();
    gateway.nap(&["keys", "add", &unique("admin"), "--admin"], &admin.public_text()).assert_ok();
    (gateway, admin, root)
}

/// A gateway on etcd with a commiter root of its own (deleted when the
/// gateway drops), for host `host_ip`; `extra` is more of `nap.toml`.
/// Answers the root too.
fn gateway_on_host(host_ip: &str, extra: &str) -> (Gateway, String) {
    let root = format!("/{}", unique("commiter"));
    let gateway = Gateway::builder()
        .settings(&format!(
            "store = \"etcd://{}\"\ncommiter_root = \"{root}\"\nhost_ip = \"{host_ip}\"\n{extra}",
            etcd_endpoint()
        ))
        .start();
    gateway.cleanup().etcd_prefix(format!("{root}/"));
    (gateway, root)
}

/// The image the original tool's containers run here: busybox, under a
/// name of its own that no build starts from. Their snapshots are its
/// children, so removing them never races a build, which reads the
/// children of its base (nap/busybox) to find its cache.
fn original_tool_image() -> &'static str {
    const IMAGE: &str = "nap-test/original-tool:latest";
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        use std::io::Write;
        let mut build = std::process::Command::new("docker")
            .args(["build", "-q", "-t", IMAGE, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker build");
        let dockerfile = "FROM nap/busybox\nLABEL nap-test=original-tool\n";
        build.stdin.take().expect("stdin").write_all(dockerfile.as_bytes()).expect("write the Dockerfile");
        assert!(build.wait().expect("docker build").success(), "docker build of {IMAGE} failed");
    });
    IMAGE
}

/// An app number in the original tool's convention, unique to the test: six
/// digits, so that no test's `NUMBERrc-COMPONENT` is part of another's.
fn app_number() -> String {
    (100_000 + rand::random::<u32>() % 900_000).to_string()
}

const IMPORT: &str =
    "App: 306\nComponent: mango\nRepository: 192.168.11.51:5000\nIps:\n  - Ip: 192.168.11.52\n  - Ip: 192.168.11.53\n";

/// The original tool's own example, unchanged.
const ORIGINAL_IMPORT: &str = include_str!("../fixtures/import.yaml");

#[test]
fn the_original_tools_example_imports_to_the_keys_its_document_lists() {
    let (gateway, admin, root) = gateway();
    gateway.ssh_with_input(&admin, "nap", &["import", "--commit", "1"], ORIGINAL_IMPORT).assert_ok();
    let keys = etcdctl(&["get", "--prefix", &format!("{root}/")]);
    let pairs: Vec<&str> = keys.stdout.lines().collect();
    assert_eq!(
        pairs,
        [
            format!("{root}/images/192.168.11.52/306/mango/repository").as_str(),
            "192.168.11.51:5000",
            format!("{root}/images/192.168.11.52/306/mango/state").as_str(),
            "1",
        ]
    );
}

#[test]
fn manage_and_import_write_the_original_tools_keys() {
    let (gateway, admin, root) = gateway();
    gateway.ssh(&admin, "nap", &["manage", "--apiserver", "192.168.11.52:8080", "--set", "namespace=prod"]).assert_ok();
    let apiserver = etcdctl(&["get", "--print-value-only", &format!("{root}/config/apiserver")]);
    assert_eq!(apiserver.stdout.trim(), "192.168.11.52:8080");
    let shown = gateway.ssh(&admin, "nap", &["manage", "--json"]);
    assert!(shown.stdout.contains("\"namespace\": \"prod\""), "{shown:?}");

    let imported = gateway.ssh_with_input(&admin, "nap", &["import", "--commit", "2"], IMPORT);
    imported.assert_ok();
    assert!(imported.stdout.contains("imported 306/mango on 192.168.11.52, 192.168.11.53 (state 2"), "{imported:?}");
    for ip in ["192.168.11.52", "192.168.11.53"] {
        let state = etcdctl(&["get", "--print-value-only", &format!("{root}/images/{ip}/306/mango/state")]);
        assert_eq!(state.stdout.trim(), "2");
        let repository = etcdctl(&["get", "--print-value-only", &format!("{root}/images/{ip}/306/mango/repository")]);
        assert_eq!(repository.stdout.trim(), "192.168.11.51:5000");
    }
}

#[test]
fn a_malformed_import_names_the_field_and_line_and_writes_nothing() {
    let (gateway, admin, root) = gateway();
    let cases = [
        (
            "App: 306\nRepository: r:5000\nIps:\n  - Ip: 10.0.0.1\n",
            "error: import: missing field `Component` at line 1",
        ),
        (
            "App: 306\nComponent: mango\nRepository: r:5000\nIps:\n  - Ip: 10.0.0.1\n  - Ip: nonsense\n",
            "error: import: invalid Ip \"nonsense\" at line 6",
        ),
        ("App: 306\nComponent: [a\n", "error: import: "),
    ];
    for (yaml, expected) in cases {
        let run = gateway.ssh_with_input(&admin, "nap", &["import"], yaml);
        assert_eq!(run.code, Some(1), "{yaml}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{yaml}: {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{:?}", run.stderr);
    }
    gateway
        .ssh_with_input(&admin, "nap", &["import", "--commit", "3"], IMPORT)
        .assert_failed_with("error: invalid value '3'");
    let written = etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/")]);
    assert!(written.stdout.trim().is_empty(), "a refused import wrote {:?}", written.stdout);

    let dev = gateway.user_for(&unique("dev"), &["shop"]);
    gateway
        .ssh_with_input(&dev, "nap", &["import"], IMPORT)
        .assert_failed_with("error: only admin keys may import commiter state");
    gateway
        .ssh(&dev, "nap", &["manage", "--apiserver", "x:1"])
        .assert_failed_with("error: only admin keys may change the commiter settings");
}

/// Parses a take-over manifest with the official Kubernetes schema types.
fn replication_controller(yaml: &str) -> k8s_openapi::api::core::v1::ReplicationController {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("not a ReplicationController ({e}):\n{yaml}"))
}

#[test]
fn commit_snapshots_nap_and_original_containers_records_their_ip_and_makes_takeover_rcs() {
    use nap_tests::{AppKind, AppRepo, REGISTRY, docker, registry_tags};
    let host_ip = "10.200.0.7";
    // The admin's take-over template (units_dir) counts; the app repo's does not.
    let units = tempfile::tempdir().expect("temp dir");
    let builtin = include_str!("../../units/takeover-rc.yaml.tera");
    let admins = builtin.replacen("    ip: \"{{ ip }}\"\n", "    ip: \"{{ ip }}\"\n    set-by: admin\n", 1);
    std::fs::write(units.path().join("takeover-rc.yaml.tera"), admins).expect("write template");
    let settings = format!("registry = \"{REGISTRY}\"\nunits_dir = \"{}\"\n", units.path().display());
    let (gateway, root) = gateway_on_host(host_ip, &settings);
    let admin = Key::generate();
    gateway.nap(&["keys", "add", &unique("admin"), "--admin"], &admin.public_text()).assert_ok();

    // A nap app, and a container named by the original tool's convention.
    let app = unique("snap");
    let repo = AppRepo::new(AppKind::Web);
    let pushers = builtin.replacen("    ip: \"{{ ip }}\"\n", "    ip: \"{{ ip }}\"\n    set-by: pusher\n", 1);
    std::fs::create_dir_all(repo.path.join(".nap")).expect("mkdir .nap");
    std::fs::write(repo.path.join(".nap/takeover-rc.yaml.tera"), pushers).expect("write template");
    repo.git_with_input(&["add", ".nap"], b"").assert_ok();
    repo.git_with_input(&["commit", "-q", "-m", "a template of the pusher's"], b"").assert_ok();
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    let number = app_number();
    let original = format!("k8s_{number}rc-mango-x1_{}", unique("pod"));
    gateway
        .cleanup()
        .container(&original)
        .images(format!("{REGISTRY}/{app}-web-*"))
        .images(format!("{REGISTRY}/{number}-mango-*"));
    docker(&["run", "-d", "--name", &original, original_tool_image(), "sleep", "300"]).assert_ok();

    let import = |app: &str, component: &str, state: &str| {
        let yaml = format!("App: {app}\nComponent: {component}\nRepository: {REGISTRY}\nIps:\n  - Ip: {host_ip}\n");
        gateway.ssh_with_input(&admin, "nap", &["import", "--commit", state], &yaml).assert_ok();
    };
    import(&app, "web", "1");
    import(&number, "mango", "2");

    let commit = gateway.ssh(&admin, "nap", &["commit", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&commit.assert_ok().stdout).expect("json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        let image = row["image"].as_str().expect("image");
        let ip = row["ip"].as_str().expect("ip");
        let prefix =
            format!("{REGISTRY}/{}-{}-{ip}:", row["app"].as_str().unwrap(), row["component"].as_str().unwrap());
        assert!(image.starts_with(&prefix), "{image}");
        assert!(docker(&["image", "inspect", image]).ok(), "no image {image}");
        let recorded = etcdctl(&["get", "--print-value-only", &format!("{root}/ips/{image}")]);
        assert_eq!(recorded.stdout.trim(), ip);
    }
    // State 1 pushes, state 2 does not.
    let nap_row = rows.iter().find(|r| r["app"] == app.as_str()).expect("nap app row");
    assert_eq!(nap_row["pushed"], true);
    let nap_tag = nap_row["image"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
    let nap_ip = nap_row["ip"].as_str().unwrap().to_owned();
    assert!(registry_tags(&format!("{app}-web-{nap_ip}")).contains(&nap_tag));
    let original_row = rows.iter().find(|r| r["app"] == number.as_str()).expect("original row");
    assert_eq!(original_row["pushed"], false);

    // Two snapshots never share a tag, even within one second.
    let again: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&admin, "nap", &["commit", &app, "--json"]).assert_ok().stdout)
            .expect("json");
    assert_ne!(again[0]["image"], nap_row["image"]);

    let takeover = gateway.ssh(&admin, "nap", &["takeover", &app]);
    let rc = replication_controller(&takeover.assert_ok().stdout);
    let name = rc.metadata.name.clone().expect("name");
    assert_eq!(name, format!("{app}rc-web-{nap_ip}"));
    let ip_label = |labels: &Option<std::collections::BTreeMap<String, String>>| {
        labels.as_ref().and_then(|l| l.get("ip")).cloned()
    };
    assert_eq!(ip_label(&rc.metadata.labels).as_deref(), Some(nap_ip.as_str()));
    let set_by = rc.metadata.labels.as_ref().and_then(|l| l.get("set-by")).map(String::as_str);
    assert_eq!(set_by, Some("admin"), "the template is the admin's, never the app repo's");
    let spec = rc.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.selector.as_ref().and_then(|s| s.get("ip")).map(String::as_str),
        Some(nap_ip.as_str()),
        "the selector lacks the ip"
    );
    let template = spec.template.expect("template");
    assert_eq!(ip_label(&template.metadata.as_ref().and_then(|m| m.labels.clone())).as_deref(), Some(nap_ip.as_str()));
    let pod = template.spec.expect("pod spec");
    assert_eq!(pod.node_name.as_deref(), Some(host_ip));
    assert_eq!(
        Some(pod.containers[0].image.clone().unwrap_or_default()),
        again[0]["image"].as_str().map(str::to_owned)
    );
    assert!(rc.metadata.uid.is_none() && rc.metadata.resource_version.is_none() && rc.status.is_none());
    for forbidden in ["uid:", "selfLink", "resourceVersion", "status:"] {
        assert!(!takeover.stdout.contains(forbidden), "{forbidden} in\n{}", takeover.stdout);
    }
}

#[test]
fn restore_starts_a_snapshot_with_its_recorded_ip_and_refuses_a_taken_one() {
    use nap_tests::{AppKind, AppRepo, REGISTRY, docker, remove_app_containers, wait_for_body};
    // A shared network of its own, where a snapshot whose address is in no
    // app's subnet goes (the original assigner's addresses).
    let octet = 100 + rand::random::<u8>() % 100;
    let network = unique("nap-restore");
    let (gateway, root) = gateway_on_host(
        "10.200.0.8",
        &format!("registry = \"{REGISTRY}\"\nnetwork = \"{network}\"\nnetwork_subnet = \"172.30.{octet}.0/24\"\n"),
    );
    gateway.cleanup().command(&["docker", "network", "rm", &network]);
    let admin = Key::generate();
    gateway.nap(&["keys", "add", &unique("admin"), "--admin"], &admin.public_text()).assert_ok();
    let app = unique("move");
    gateway.cleanup().images(format!("{REGISTRY}/{app}-web-*"));
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let yaml = format!("App: {app}\nComponent: web\nRepository: {REGISTRY}\nIps:\n  - Ip: 10.200.0.8\n");
    gateway.ssh_with_input(&admin, "nap", &["import"], &yaml).assert_ok();
    let rows: serde_json::Value =
        serde_json::from_str(&gateway.ssh(&admin, "nap", &["commit", "--json"]).assert_ok().stdout).expect("json");
    let image = rows[0]["image"].as_str().expect("image").to_owned();
    let ip = rows[0]["ip"].as_str().expect("ip").to_owned();
    let subnet =
        docker(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", &format!("nap-{app}")]);
    let prefix = subnet.assert_ok().stdout.trim().trim_end_matches(".0/24").to_owned();
    assert!(ip.starts_with(&format!("{prefix}.")), "releases run on their app's network ({prefix}.0/24): {ip}");

    // While the original runs, its IP is taken.
    let taken = gateway.ssh(&admin, "nap", &["restore", &image]);
    taken.assert_failed_with(&format!("error: {ip} is taken by nap-{app}-v1-web.1"));

    // The host is lost: the container and its local image are gone. The
    // snapshot comes back from the registry, at the same address.
    remove_app_containers(&app);
    docker(&["rmi", "-f", &image]);
    let restored = gateway.ssh(&admin, "nap", &["restore", &image, "--json"]);
    let restored: serde_json::Value = serde_json::from_str(&restored.assert_ok().stdout).expect("json");
    let container = restored["container"].as_str().expect("container").to_owned();
    gateway.cleanup().container(&container).container(format!("{container}-2"));
    let address = docker(&[
        "inspect",
        "-f",
        "{{range $name, $n := .NetworkSettings.Networks}}{{$name}} {{$n.IPAddress}}{{end}}",
        &container,
    ]);
    assert_eq!(address.stdout.trim(), format!("nap-{app} {ip}"), "back on its app's network, at its address");
    assert!(wait_for_body(&format!("http://{ip}:5000/"), "hello from web", std::time::Duration::from_secs(10)));

    // Without nap's record, the original assigner's is used.
    let assigner_key = format!("/assigner/ips/{image}");
    gateway.cleanup().etcd_key(&assigner_key);
    etcdctl(&["del", &format!("{root}/ips/{image}")]);
    let assigned = format!("172.30.{octet}.250");
    etcdctl(&["put", &assigner_key, &assigned]);
    let other = gateway.ssh(&admin, "nap", &["restore", &image, "--name", &format!("{container}-2")]);
    other.assert_ok();
    assert!(other.stdout.contains(&format!("at {assigned}")), "{other:?}");

    gateway
        .ssh(&admin, "nap", &["restore", "nowhere/none:1"])
        .assert_failed_with("error: no IP recorded for nowhere/none:1");
}

/// A container's freezer as the kernel shows it: cgroup v1's `freezer.state`,
/// else cgroup v2's `cgroup.freeze` and `cgroup.events`.
struct Freezer(std::path::PathBuf, bool);

impl Freezer {
    fn of(container: &str) -> Freezer {
        let pid = nap_tests::docker(&["inspect", "-f", "{{.State.Pid}}", container]);
        let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.stdout.trim())).expect("cgroups");
        let path = |line: &str| line.splitn(3, ':').nth(2).expect("cgroup path").to_owned();
        if let Some(line) =
            cgroups.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "freezer")))
        {
            Freezer(format!("/sys/fs/cgroup/freezer{}", path(line)).into(), true)
        } else {
            let line = cgroups.lines().find(|l| l.starts_with("0::")).expect("a cgroup");
            Freezer(format!("/sys/fs/cgroup{}", path(line)).into(), false)
        }
    }

    fn is_frozen(&self) -> bool {
        if self.1 {
            std::fs::read_to_string(self.0.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        } else {
            std::fs::read_to_string(self.0.join("cgroup.events")).is_ok_and(|s| s.lines().any(|l| l == "frozen 1"))
        }
    }

    /// Freezes it as a commit killed with SIGKILL would have left it.
    fn freeze(&self) {
        let (file, value) = if self.1 { ("freezer.state", "FROZEN") } else { ("cgroup.freeze", "1") };
        std::fs::write(self.0.join(file), value).expect("freeze");
    }
}

#[test]
fn commit_holds_each_container_still_and_lets_it_go_even_when_interrupted() {
    use nap_tests::{REGISTRY, docker};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let host_ip = "10.200.0.9";
    let (gateway, _root) = gateway_on_host(host_ip, "");
    let number = app_number();
    let pod = unique("pod");
    // 8 MiB each, so that a snapshot takes long enough to be caught frozen.
    let containers: Vec<String> = (0..4).map(|i| format!("k8s_{number}rc-web-{i}_{pod}")).collect();
    gateway.cleanup().images(format!("{REGISTRY}/{number}-web-*"));
    for name in &containers {
        gateway.cleanup().container(name);
        let script = "dd if=/dev/urandom of=/data.bin bs=1M count=8 2>/dev/null; exec sleep 300";
        docker(&["run", "-d", "--name", name, original_tool_image(), "sh", "-c", script]).assert_ok();
    }
    let yaml = format!("App: {number}\nComponent: web\nRepository: {REGISTRY}\nIps:\n  - Ip: {host_ip}\n");
    gateway.nap(&["import", "--commit", "2"], &yaml).assert_ok();
    std::thread::sleep(Duration::from_secs(1));
    let freezers: Vec<Freezer> = containers.iter().map(|c| Freezer::of(c)).collect();
    // Paused by the user: snapshotted as it is, and left paused.
    docker(&["pause", &containers[3]]).assert_ok();
    // Left frozen by a commit that was killed: the next snapshot thaws it.
    freezers[2].freeze();

    let committing = AtomicBool::new(true);
    let seen_frozen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = [false; 2];
            while committing.load(Ordering::Relaxed) {
                for (seen, freezer) in seen.iter_mut().zip(&freezers) {
                    *seen |= freezer.is_frozen();
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            seen
        });
        let rows = gateway.nap(&["commit", "--json"], "");
        committing.store(false, Ordering::Relaxed);
        let rows: serde_json::Value = serde_json::from_str(&rows.assert_ok().stdout).expect("json");
        assert_eq!(rows.as_array().map(Vec::len), Some(4), "{rows}");
        watcher.join().expect("watcher")
    });
    assert_eq!(seen_frozen, [true, true], "each container is held still while it is snapshotted");
    for freezer in &freezers[..3] {
        assert!(!freezer.is_frozen(), "a container was left frozen: {}", freezer.0.display());
    }
    let paused = docker(&["inspect", "-f", "{{.State.Paused}}", &containers[3]]);
    assert_eq!(paused.stdout.trim(), "true", "a paused container stays paused");

    // Interrupted while a snapshot holds a container: every one is let go.
    let child = gateway
        .command()
        .args(["commit"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nap commit");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !freezers[..3].iter().any(Freezer::is_frozen) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() == Some(130) && stderr.contains("error: stopped by SIGINT") || output.status.success(),
        "{:?}: {stderr}",
        output.status
    );
    for freezer in &freezers[..3] {
        assert!(!freezer.is_frozen(), "an interrupted commit left a container frozen: {}", freezer.0.display());
    }
}

#[test]
fn a_failed_snapshot_is_reported_for_its_container_and_the_others_are_recorded() {
    use nap_tests::{REGISTRY, docker};
    let host_ip = "10.200.0.10";
    let (gateway, root) = gateway_on_host(host_ip, "");
    let number = app_number();
    let pod = unique("pod");
    let (web, db) = (format!("k8s_{number}rc-web-0_{pod}"), format!("k8s_{number}rc-db-0_{pod}"));
    gateway.cleanup().images(format!("{REGISTRY}/{number}-web-*")).images(format!("127.0.0.1:9/{number}-db-*"));
    for name in [&web, &db] {
        gateway.cleanup().container(name);
        docker(&["run", "-d", "--name", name, original_tool_image(), "sleep", "300"]).assert_ok();
    }
    let import = |component: &str, state: &str, repository: &str| {
        let yaml =
            format!("App: {number}\nComponent: {component}\nRepository: {repository}\nIps:\n  - Ip: {host_ip}\n");
        gateway.nap(&["import", "--commit", state], &yaml).assert_ok();
    };
    import("web", "2", REGISTRY);
    // Nothing listens there: db's snapshot is made but cannot be pushed.
    import("db", "1", "127.0.0.1:9");

    let commit = gateway.nap(&["commit"], "");
    assert_eq!(commit.code, Some(1), "{commit:?}");
    commit.assert_failed_with("error: 1 of 2 snapshot(s) failed; see above");
    let db_line = commit.stdout.lines().chain(commit.stderr.lines()).find(|l| l.contains(&db)).unwrap_or_default();
    assert!(db_line.contains("127.0.0.1:9"), "db's failure names its container and registry: {commit:?}");

    // web's keys are written whole; db has none beyond its import.
    let keys = etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/")]);
    let mut keys: Vec<&str> = keys.stdout.lines().filter(|k| !k.is_empty()).collect();
    keys.sort_unstable();
    let web_ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &web]);
    let web_ip = web_ip.stdout.trim();
    let [db_repo, db_state, web_repo, web_state, ips, takeover] = keys[..] else {
        panic!("expected the four import keys, web's image IP and web's take-over RC: {keys:?}");
    };
    let import_key = |component: &str, field: &str| format!("{root}/images/{host_ip}/{number}/{component}/{field}");
    assert_eq!(
        [db_repo, db_state, web_repo, web_state].map(str::to_owned),
        [
            import_key("db", "repository"),
            import_key("db", "state"),
            import_key("web", "repository"),
            import_key("web", "state")
        ]
    );
    assert!(ips.starts_with(&format!("{root}/ips/{REGISTRY}/{number}-web-{web_ip}:")), "{ips}");
    assert_eq!(takeover, format!("{root}/takeover/{number}/web-{web_ip}"));
}

#[test]
fn a_second_commit_on_a_host_is_refused_while_one_holds_its_containers() {
    use nap_tests::{REGISTRY, docker};
    let host_ip = "10.200.0.11";
    let (gateway, root) = gateway_on_host(host_ip, "");
    let number = app_number();
    let container = format!("k8s_{number}rc-web-0_{}", unique("pod"));
    gateway.cleanup().container(&container).images(format!("{REGISTRY}/{number}-web-*"));
    docker(&["run", "-d", "--name", &container, original_tool_image(), "sleep", "300"]).assert_ok();
    let yaml = format!("App: {number}\nComponent: web\nRepository: {REGISTRY}\nIps:\n  - Ip: {host_ip}\n");
    gateway.nap(&["import", "--commit", "2"], &yaml).assert_ok();

    // Another nap is committing on this host: its lock, as it writes it.
    let granted = etcdctl(&["lease", "grant", "60"]);
    let lease = granted.stdout.split_whitespace().nth(1).expect("lease id").to_owned();
    let holder = serde_json::json!({
        "holder": "commit by alice, pid 4242", "host": "node-b", "pid": 4242,
        "lease": i64::from_str_radix(&lease, 16).expect("hex lease"),
    });
    let lock = nap_state::layout::lock(&format!("snapshot@{host_ip}"));
    gateway.cleanup().etcd_key(&lock);
    etcdctl(&["put", "--lease", &lease, &lock, &holder.to_string()]).assert_ok();

    let refused = gateway.nap(&["commit"], "");
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr.trim_end(),
        format!(
            "error: a snapshot is already running on {host_ip} (commit by alice, pid 4242 on node-b); try again when \
             it is done"
        )
    );
    let written = etcdctl(&["get", "--prefix", "--keys-only", &format!("{root}/ips/")]);
    assert!(written.stdout.trim().is_empty(), "a refused commit wrote {:?}", written.stdout);
    assert!(!Freezer::of(&container).is_frozen(), "a refused commit froze a container");

    // Its holder is done: the next commit goes through and lets the lock go.
    etcdctl(&["lease", "revoke", &lease]).assert_ok();
    gateway.nap(&["commit"], "").assert_ok();
    let left = etcdctl(&["get", "--print-value-only", &lock]);
    assert!(left.stdout.trim().is_empty(), "commit left its lock: {:?}", left.stdout);
}
