//! `nap-watch --exec` as an image's entrypoint (the app-image pattern): a
//! test image built here from the static `nap-watch`
//! (`scripts/build-nap-watch.sh`), the classic cluster template, the real
//! etcd and dockerd.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nap_tests::{Cleanup, Run, docker, etcd_endpoint, etcdctl, unique};

/// The static binary `scripts/build-nap-watch.sh` builds.
fn static_nap_watch() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/release/nap-watch");
    assert!(path.exists(), "{} is missing: run scripts/build-nap-watch.sh (scripts/test.sh does)", path.display());
    path
}

const CLUSTER_TEMPLATE: &str = "{% for dir in lsdir(key=\"/hosts\") %}server.{{ getv(key=\"/hosts/\" ~ dir ~ \"/sid\") }}={{ getv(key=\"/hosts/\" ~ dir ~ \"/ip\") }}:2888:3888\n{% endfor %}";

/// Builds the test image: busybox, the static nap-watch, a conf.d resource
/// under `prefix`, and an app (httpd) that leaves an orphan behind.
fn build_image(prefix: &str) -> String {
    let context = tempfile::tempdir().expect("temp dir");
    let dir = context.path();
    std::fs::copy(static_nap_watch(), dir.join("nap-watch")).expect("copy nap-watch");
    std::fs::create_dir_all(dir.join("conf.d")).expect("mkdir");
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("conf.d/zoo.toml"),
        format!(
            "[template]\nsrc = \"zoo.cfg.tera\"\ndest = \"/www/zoo.cfg\"\nprefix = \"{prefix}\"\nkeys = [\"/hosts\"]\n\
             reload_cmd = \"echo reloaded >> /www/reloads\"\n"
        ),
    )
    .expect("conf.d");
    std::fs::write(dir.join("templates/zoo.cfg.tera"), CLUSTER_TEMPLATE).expect("template");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM nap/busybox\nCOPY nap-watch /bin/nap-watch\nCOPY conf.d /etc/nap/conf.d\nCOPY templates /etc/nap/templates\n\
         ENTRYPOINT [\"/bin/nap-watch\", \"--confdir\", \"/etc/nap/conf.d\", \"--debounce\", \"0\", \"--exec\", \"--\"]\n\
         CMD [\"sh\", \"-c\", \"(sleep 0.3 &); exec httpd -f -p 18080 -h /www\"]\n",
    )
    .expect("Dockerfile");
    let tag = format!("nap-test-entrypoint:{}", unique("t"));
    let built: Run = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir)
        .output()
        .expect("docker build")
        .into();
    built.assert_ok();
    tag
}

fn wait_for_file(container: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let content = docker(&["exec", container, "cat", "/www/zoo.cfg"]).stdout;
        if content == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zoo.cfg is {content:?}, not {expected:?}\n{}",
            docker(&["logs", container]).stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_entrypoint_renders_first_runs_the_app_follows_etcd_reaps_orphans_and_forwards_signals() {
    let (prefix, cleanup) = Cleanup::etcd_root("cluster");
    let container = unique("nap-entrypoint");
    cleanup.container(&container);
    etcdctl(&["put", &format!("{prefix}/hosts/a/sid"), "1"]).assert_ok();
    etcdctl(&["put", &format!("{prefix}/hosts/a/ip"), "10.0.0.1"]).assert_ok();
    let image = build_image(&prefix);
    cleanup.images(&image);
    let store = format!("NAP_STORE=etcd://{}", etcd_endpoint());
    docker(&["run", "-d", "--name", &container, "--network", "host", "-e", &store, &image]).assert_ok();

    wait_for_file(&container, "server.1=10.0.0.1:2888:3888\n");
    let before = docker(&["exec", &container, "cat", "/www/reloads"]);
    assert!(before.stdout.is_empty(), "a reload ran before the app did: {before:?}");
    etcdctl(&["put", &format!("{prefix}/hosts/b/sid"), "2"]).assert_ok();
    etcdctl(&["put", &format!("{prefix}/hosts/b/ip"), "10.0.0.2"]).assert_ok();
    wait_for_file(&container, "server.1=10.0.0.1:2888:3888\nserver.2=10.0.0.2:2888:3888\n");
    let reloads = docker(&["exec", &container, "cat", "/www/reloads"]);
    assert!(!reloads.stdout.is_empty(), "the reload did not run on the change: {reloads:?}");

    // The app started an orphan that died; PID 1 (nap-watch) reaped it.
    std::thread::sleep(Duration::from_secs(1));
    let states = docker(&["exec", &container, "sh", "-c", "grep -h '^State' /proc/[0-9]*/status"]);
    assert!(!states.stdout.contains("zombie"), "a zombie was left: {states:?}");
    let pid1 = docker(&["exec", &container, "cat", "/proc/1/cmdline"]);
    assert!(pid1.stdout.starts_with("/bin/nap-watch"), "{pid1:?}");

    // docker stop's SIGTERM reaches httpd, and its status is the container's.
    let started = Instant::now();
    docker(&["stop", "-t", "20", &container]).assert_ok();
    assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM was not passed on");
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &container]);
    assert_eq!(code.stdout.trim(), "143", "httpd ended by SIGTERM is 128 + 15");

    // A key the template needs is missing: the app never starts.
    etcdctl(&["put", &format!("{prefix}/hosts/c/ip"), "10.0.0.3"]).assert_ok();
    let refused = docker(&["run", "--rm", "--network", "host", "-e", &store, &image]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("error: the first render failed, so sh was not started"), "{refused:?}");
    assert!(refused.stderr.contains(&format!("key /hosts/c/sid ({prefix}/hosts/c/sid) not found")), "{refused:?}");
    assert!(!refused.stderr.contains("httpd"), "{refused:?}");
}
