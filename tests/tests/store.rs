//! nap on a real etcd (`store = "etcd://..."`), and what happens when etcd
//! cannot be reached.

use std::time::{Duration, Instant};

use nap_tests::{AppKind, AppRepo, Deployed, Gateway, Key, Run, etcd_endpoint, etcdctl, unique, wait_for_body};

#[test]
fn a_push_keeps_its_state_in_etcd() {
    let gateway = Gateway::builder().settings(&format!("store = \"etcd://{}\"\n", etcd_endpoint())).start();
    // etcd is shared by every test: names are unique, and the gateway
    // deletes its app's and key's keys when it drops.
    let admin_name = unique("admin");
    let admin = Key::generate();
    gateway.nap(&["keys", "add", &admin_name, "--admin"], &admin.public_text()).assert_ok();
    let app = unique("etcd");
    let push = AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master");
    push.assert_ok();
    assert!(wait_for_body(&push.url().expect("url"), "hello from web", Duration::from_secs(10)));

    let current = etcdctl(&["get", "--print-value-only", &format!("/nap/apps/{app}/current")]);
    assert_eq!(current.stdout.trim(), "1", "{current:?}");
    let key = etcdctl(&["get", "--print-value-only", &format!("/nap/keys/{admin_name}")]);
    assert!(key.stdout.contains("ssh-ed25519"), "{key:?}");
    let releases = gateway.ssh(&admin, "nap", &["releases", &app]);
    assert!(releases.stdout.contains("v1*"), "{releases:?}");
}

#[test]
fn an_unreachable_etcd_is_one_line_within_a_bounded_time() {
    let gateway = Gateway::start();
    for args in [vec!["--store", "etcd://127.0.0.1:1", "apps"], vec!["--store", "etcd://127.0.0.1:1", "serve"]] {
        let started = Instant::now();
        let run = gateway.nap(&args, "");
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: etcd at 127.0.0.1:1: "), "{args:?}: {:?}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{:?}", run.stderr);
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", started.elapsed());
    }
    let malformed = gateway.nap(&["--store", "etcd://nohost", "apps"], "");
    assert!(malformed.stderr.starts_with("error: invalid store \"etcd://nohost\""), "{malformed:?}");
}

#[test]
fn when_etcd_dies_pushes_and_commands_fail_in_bounded_time_and_nothing_is_lost() {
    let mut etcd = nap_tests::PrivateEtcd::start();
    let gateway = Gateway::builder().settings(&format!("store = \"{}\"\n", etcd.url())).start();
    let admin = gateway.user("admin");
    let app = unique("etcddown");
    let repo = AppRepo::new(AppKind::Web);
    let first = repo.push(&gateway, &admin, &app, "master");
    first.assert_ok();
    let url = first.url().expect("url");
    let good = repo.head();

    etcd.kill();
    let endpoint = format!("etcd at 127.0.0.1:{}", etcd.client_port);
    repo.commit("index.html", "never deployed\n");
    let started = Instant::now();
    let push = repo.push(&gateway, &admin, &app, "master");
    // Refused before git runs: without the store, no key can be checked.
    push.assert_failed_with(&format!("error: cannot check the key \"admin\": {endpoint}"));
    assert!(started.elapsed() < Duration::from_secs(30), "the push took {:?}", started.elapsed());
    assert_eq!(gateway.branch_sha(&app, "master"), Some(good), "the ref moved");
    assert!(wait_for_body(&url, "hello from web", Duration::from_secs(5)), "the serving release stopped");

    let started = Instant::now();
    let apps = gateway.ssh(&admin, "nap", &["apps"]);
    assert_eq!(apps.code, Some(1), "{apps:?}");
    assert!(
        apps.stderr.starts_with(&format!("error: cannot check the key \"admin\": {endpoint}")),
        "{:?}",
        apps.stderr
    );
    assert_eq!(apps.stderr.trim_end().lines().count(), 1, "{:?}", apps.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "the command took {:?}", started.elapsed());

    // Nor does a clone, which needs no store itself (fail closed).
    let clone_dir = tempfile::tempdir().expect("temp dir");
    let clone: Run = std::process::Command::new("git")
        .env("GIT_SSH_COMMAND", admin.ssh_command())
        .args(["clone", "-q", &gateway.remote(&app)])
        .arg(clone_dir.path().join("app"))
        .output()
        .expect("git clone")
        .into();
    clone.assert_failed_with(&format!("cannot check the key \"admin\": {endpoint}"));
    assert!(started.elapsed() < Duration::from_secs(30), "the command took {:?}", started.elapsed());
}

#[test]
fn an_etcd_with_authentication_takes_the_configured_user_and_refuses_a_wrong_password() {
    let etcd = nap_tests::PrivateEtcd::start();
    etcd.enable_auth("etcd-s3cret");
    let settings = |password: &str| {
        format!("store = \"{}\"\nstore_user = \"root\"\nstore_password = \"{password}\"\n", etcd.url())
    };
    let gateway = Gateway::builder().settings(&settings("etcd-s3cret")).start();
    let admin = gateway.user("admin");
    let listed = gateway.ssh(&admin, "nap", &["keys", "--json"]);
    assert!(listed.assert_ok().stdout.contains("\"name\": \"admin\""), "{listed:?}");

    let wrong = Gateway::builder().settings(&settings("etcd-s3cret")).start();
    std::fs::write(
        wrong.config_path(),
        format!("data_dir = \"{}\"\n{}", wrong.data_dir().display(), settings("wrong")),
    )
    .expect("rewrite nap.toml");
    let refused = wrong.nap(&["keys"], "");
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with(&format!("error: etcd at 127.0.0.1:{}: ", etcd.client_port)),
        "{:?}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("wrong"), "the password shows: {:?}", refused.stderr);
}

#[test]
fn an_etcd_over_tls_takes_the_configured_ca_and_client_certificate_and_refuses_another_ca() {
    let etcd = nap_tests::PrivateEtcd::start_tls();
    let tls = etcd.tls().expect("tls").clone();
    let settings = |ca: &std::path::Path| {
        format!(
            "store = \"{}\"\nstore_ca = \"{}\"\nstore_cert = \"{}\"\nstore_key = \"{}\"\n",
            etcd.url(),
            ca.display(),
            tls.cert.display(),
            tls.key.display()
        )
    };
    let Deployed { gateway, key: admin, app, repo: _, push: _ } =
        Deployed::push(Gateway::builder().settings(&settings(&tls.ca)).start(), AppKind::Web, "tls");
    let apps = gateway.ssh(&admin, "nap", &["apps"]);
    assert!(apps.assert_ok().stdout.contains(&app), "{apps:?}");
    let current = etcd.etcdctl(&["get", "--print-value-only", &format!("/nap/apps/{app}/current")]);
    assert_eq!(current.stdout.trim(), "1", "the push's state is in the TLS etcd");

    // A CA that did not sign etcd's certificate: one line, naming the endpoint.
    let other = nap_tests::PrivateEtcd::start_tls();
    let wrong = Gateway::builder().settings(&settings(&tls.ca)).start();
    std::fs::write(
        wrong.config_path(),
        format!("data_dir = \"{}\"\n{}", wrong.data_dir().display(), settings(&other.tls().expect("tls").ca)),
    )
    .expect("rewrite nap.toml");
    let refused = wrong.nap(&["apps"], "");
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with(&format!("error: etcd at 127.0.0.1:{}", etcd.client_port)),
        "{:?}",
        refused.stderr
    );
    assert_eq!(refused.stderr.trim_end().lines().count(), 1, "{:?}", refused.stderr);
}
