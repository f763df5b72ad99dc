//! The commiter flow's setup over real ssh, with its keys in a real etcd:
//! `manage` and `import` (the original tool's YAML, unchanged).

use std::process::Command;

use nap_tests::{Gateway, Key, Run, unique};

fn etcd_endpoint() -> String {
    std::env::var("NAP_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into())
}

fn etcdctl(args: &[&str]) -> Run {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd_endpoint()])
        .args(args)
        .output()
        .expect("etcdctl")
        .into()
}

/// A gateway on etcd with a commiter root of its own, and an admin key.
fn gateway() -> (Gateway, Key, String) {
    let root = format!("/{}", unique("commiter"));
    let gateway =
        Gateway::start_with_settings(&format!("store = \"etcd://{}\"\ncommiter_root = \"{root}\"\n", etcd_endpoint()));
    let admin = Key::generate();
    gateway.nap(&["keys", "add", &unique("admin"), "--admin"], &admin.public_text()).assert_ok();
    (gateway, admin, root)
}

const IMPORT: &str =
    "App: 306\nComponent: mango\nRepository: 192.168.11.51:5000\nIps:\n  - Ip: 192.168.11.52\n  - Ip: 192.168.11.53\n";

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
    etcdctl(&["del", "--prefix", &format!("{root}/")]);
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
