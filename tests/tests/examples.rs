//! The shipped examples, run as a user would: `examples/k8s-deploy/` with
//! the real `nap watch` against the real etcd, `nap rollout set/undo` as CI,
//! and the recording stand-in `kubectl` (a test double: no API server runs
//! here) on the watcher's PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nap_tests::{
    AppKind, AppRepo, Cleanup, Gateway, PrivateEtcd, REGISTRY, Run, StandInCluster, etcd_endpoint, etcdctl, free_port,
    nap_bin, unique,
};

/// Copies `examples/NAME` into `dir`, with its base directories
/// (`/var/lib/nap-deploy`, `/etc/nap/nginx`) and project (`demoproject`) replaced.
fn install_example(name: &str, dir: &Path, project: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    for sub in ["conf.d", "templates", "bin"] {
        if !source.join(sub).exists() {
            continue;
        }
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(source.join(sub)).expect("example").flatten() {
            let text = std::fs::read_to_string(entry.path()).expect("read");
            let base = dir.display().to_string();
            let text = text
                .replace("/var/lib/nap-deploy", &base)
                .replace("/etc/nap/nginx", &base)
                .replace("demoproject", project);
            let target = dir.join(sub).join(entry.file_name().to_string_lossy().replace("demoproject", project));
            std::fs::write(&target, text).expect("write");
            let mode = std::fs::metadata(entry.path()).expect("meta").permissions();
            std::fs::set_permissions(&target, mode).expect("chmod");
        }
    }
}

fn nap(args: &[&str]) -> Run {
    Command::new(nap_bin())
        .args(["--store", &format!("etcd://{}", etcd_endpoint())])
        .args(args)
        .output()
        .expect("nap")
        .into()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn logs(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> =
        std::fs::read_dir(dir.join("logs").join(name)).into_iter().flatten().flatten().map(|e| e.path()).collect();
    logs.sort();
    logs
}

#[test]
fn k8s_deploy_turns_rollout_and_undo_keys_into_kubectl_and_clears_stale_undos_at_start() {
    let cluster = StandInCluster::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let project = unique("demo");
    let cleanup = Cleanup::new();
    cleanup.etcd_prefix(format!("/k8s-deploy/{project}/"));
    install_example("k8s-deploy", dir.path(), &project);
    let undo_key = format!("/k8s-deploy/{project}/undo/dev");
    // An undo left from before the watcher started: stale.
    etcdctl(&["put", &undo_key, r#"{"k8sNamespace":"ns","appParent":"old","appName":"old"}"#]).assert_ok();

    let mut command = Command::new(nap_bin());
    command
        .args(["--store", &format!("etcd://{}", etcd_endpoint()), "watch", "--confdir"])
        .arg(dir.path().join("conf.d"))
        .env("NAP_DEPLOY_LOG_DIR", dir.path().join("logs"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("watch.log")).expect("log"));
    for (key, value) in cluster.env() {
        command.env(key, value);
    }
    let _watcher = Watcher(command.spawn().expect("nap watch"));
    wait_until("the stale undo key's removal", Duration::from_secs(10), || {
        etcdctl(&["get", "--print-value-only", &undo_key]).stdout.trim().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(cluster.calls_of(&["rollout", "undo"]).is_empty(), "a stale undo ran");

    // A log older than NAP_DEPLOY_LOG_MINUTES (1440 by default) goes at the next run.
    let old_log = dir.path().join("logs").join(format!("{project}-rollout")).join("20000101_000000.log");
    std::fs::create_dir_all(old_log.parent().expect("dir")).expect("mkdir");
    std::fs::write(&old_log, "old\n").expect("old log");
    Command::new("touch").args(["-d", "2 days ago"]).arg(&old_log).status().expect("touch");

    // CI asks for a rollout.
    let image = "registry.example:5000/s1:e1234a5";
    let set = nap(&[
        "rollout",
        "set",
        "--project",
        &project,
        "--env",
        "dev",
        "--namespace",
        "ns-demo-dev",
        "--app",
        "s1",
        "--image",
        image,
    ]);
    assert!(set.assert_ok().stdout.contains(&format!("/k8s-deploy/{project}/rollout/dev")), "{set:?}");
    wait_until("kubectl set image", Duration::from_secs(10), || !cluster.calls_of(&["set", "image"]).is_empty());
    let call = cluster.calls_of(&["set", "image"]).remove(0);
    assert_eq!(call.words(), ["set", "image", &format!("deployments/{project}-s1"), &format!("s1={image}")]);
    assert_eq!(call.namespace(), Some("ns-demo-dev"));
    let rollout_log = || -> String {
        logs(dir.path(), &format!("{project}-rollout")).iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    };
    wait_until("the rollout's log", Duration::from_secs(5), || rollout_log().contains("image updated"));
    let log = rollout_log();
    assert!(log.contains("image updated") && log.contains("exit code 0"), "{log}");
    assert!(!old_log.exists(), "an old log was kept");

    // And for an undo: history, undo, history.
    nap(&["rollout", "undo", "--project", &project, "--env", "dev", "--namespace", "ns-demo-dev", "--app", "s1"])
        .assert_ok();
    wait_until("kubectl rollout undo", Duration::from_secs(10), || {
        cluster.calls_of(&["rollout", "history"]).len() == 2
    });
    let verbs: Vec<Vec<String>> = cluster
        .calls()
        .iter()
        .filter(|c| c.words().first() == Some(&"rollout"))
        .map(|c| c.words().iter().map(ToString::to_string).collect())
        .collect();
    let deployment = format!("deployments/{project}-s1");
    assert_eq!(
        verbs,
        [["rollout", "history", &deployment], ["rollout", "undo", &deployment], ["rollout", "history", &deployment]]
    );

    // Bad requests are one line and exit 1.
    let bad =
        nap(&["rollout", "set", "--project", "a/b", "--env", "dev", "--namespace", "n", "--app", "s1", "--image", "x"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.starts_with("error: invalid project \"a/b\""), "{bad:?}");
    let bad = nap(&[
        "rollout",
        "set",
        "--project",
        &project,
        "--env",
        "dev",
        "--namespace",
        "n",
        "--app",
        "s1",
        "--image",
        "x;id",
    ]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.starts_with("error: invalid image \"x;id\""), "{bad:?}");

    // A value written to the key by other means is still one word to the
    // shell: the rendered script quotes every value.
    let planted = dir.path().join("planted");
    let hostile = format!("x;touch {}", planted.display());
    let value = serde_json::json!({"k8sNamespace": "ns-demo-dev", "appParent": project, "appName": "s1", "imageLatest": hostile});
    etcdctl(&["put", &format!("/k8s-deploy/{project}/rollout/dev"), &value.to_string()]).assert_ok();
    wait_until("kubectl set image, again", Duration::from_secs(10), || cluster.calls_of(&["set", "image"]).len() == 2);
    let call = cluster.calls_of(&["set", "image"]).remove(1);
    assert_eq!(call.words(), ["set", "image", &format!("deployments/{project}-s1"), &format!("s1={hostile}")]);
    assert!(!planted.exists(), "a value in the key ran as a command");
}

struct Nginx(PathBuf);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(&self.0)
            .args(["-s", "quit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn nginx_routes_to_the_instances_nap_publishes_and_follows_a_new_release() {
    let etcd = PrivateEtcd::start();
    let gateway = Gateway::builder()
        .settings(&format!("store = \"{}\"\nregistry = \"{REGISTRY}\"\nhost_ip = \"127.0.0.1\"\n", etcd.url()))
        .start();
    let admin = gateway.user("admin");
    let app = unique("routed");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    let instances = etcd.etcdctl(&["get", "--prefix", &format!("/nap/apps/{app}/instances/")]);
    let lines: Vec<&str> = instances.stdout.lines().collect();
    assert_eq!(lines[0], format!("/nap/apps/{app}/instances/nap-{app}-v1-web.1/ip"), "{lines:?}");
    // The container's own address on its app's network (from app_subnets'
    // 10.112.0.0/12): no host port is published.
    let ip: std::net::Ipv4Addr = lines[1].parse().expect("an IP");
    let [first, second, ..] = ip.octets();
    assert!(first == 10 && (112..128).contains(&second), "{lines:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    install_example("nginx", dir.path(), "unused");
    let port = free_port().to_string();
    let watch = |extra: &[&str]| {
        let mut command = Command::new(nap_bin());
        command
            .args(["--store", &etcd.url(), "watch", "--confdir"])
            .arg(dir.path().join("conf.d"))
            .args(extra)
            .env("NAP_NGINX_DIR", dir.path())
            .env("NAP_NGINX_PORT", &port);
        command
    };
    let first: Run = watch(&["--onetime"]).output().expect("nap watch").into();
    first.assert_ok();
    let conf = dir.path().join("nginx.conf");
    // nginx daemonizes; the daemon keeps its stderr, so it gets a file, not a pipe.
    let started = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("nginx.log")).expect("log"))
        .status()
        .expect("nginx");
    assert!(started.success(), "{}", std::fs::read_to_string(dir.path().join("nginx.log")).unwrap_or_default());
    let _nginx = Nginx(conf.clone());
    let _watcher = Watcher(
        watch(&["--debounce", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("watch.log")).expect("log"))
            .spawn()
            .expect("nap watch"),
    );
    let through_nginx = || -> String {
        let run: Run = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "5",
                "-H",
                &format!("Host: {app}.nap.local"),
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .expect("curl")
            .into();
        run.stdout
    };
    wait_until("v1 through nginx", Duration::from_secs(10), || through_nginx().contains("hello from web"));

    repo.commit("index.html", "v2 through nginx\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    wait_until("v2 through nginx", Duration::from_secs(15), || through_nginx().contains("v2 through nginx"));
    let rendered = std::fs::read_to_string(&conf).expect("nginx.conf");
    assert!(
        rendered.contains(&format!("# nap-{app}-v2-web.1, v2")) && !rendered.contains(&format!("nap-{app}-v1-web.1")),
        "{rendered}"
    );
    let left = etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("/nap/apps/{app}/instances/")]);
    assert!(
        left.stdout.lines().filter(|l| !l.is_empty()).all(|k| k.contains(&format!("nap-{app}-v2-web.1/"))),
        "{left:?}"
    );
}
