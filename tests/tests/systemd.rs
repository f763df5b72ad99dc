//! The systemd runner against a real systemd (PID 1 of a container) over its
//! real D-Bus socket: releases are units that `systemctl` shows and controls,
//! and that come back after a reboot.

use std::time::Duration;

use nap_tests::{AppKind, AppRepo, Gateway, SystemdHost, containers_of, unique, wait_for_body};

const ANSWER: Duration = Duration::from_secs(15);

fn gateway_on(host: &SystemdHost) -> Gateway {
    Gateway::builder().settings(&host.settings()).start()
}

fn started_at(container: &str) -> String {
    nap_tests::docker(&["inspect", "-f", "{{.State.StartedAt}}", container]).stdout
}

#[test]
fn a_push_becomes_an_enabled_unit_that_systemctl_controls_and_a_reboot_brings_back() {
    let host = SystemdHost::start();
    let gateway = gateway_on(&host);
    let admin = gateway.user("admin");
    let app = unique("unit");
    let repo = AppRepo::new(AppKind::Web);

    let first = repo.push(&gateway, &admin, &app, "master");
    first.assert_ok();
    assert!(first.stderr.contains(&format!("Starting nap-{app}@1.web.1.service")), "{}", first.stderr);
    let status = host.systemctl(&["status", &format!("nap-{app}@1.web.1")]);
    assert!(status.stdout.contains("Active: active (running)"), "{status:?}");
    assert!(status.stdout.contains("enabled;"), "{status:?}");

    repo.commit("index.html", "second\n");
    let second = repo.push(&gateway, &admin, &app, "master");
    second.assert_ok();
    assert!(second.stderr.contains(&format!("Retired nap-{app}@1.web.1.service")), "{}", second.stderr);
    let url = second.url().expect("url");
    assert!(wait_for_body(&url, "second", ANSWER));
    assert!(!host.unit_dir().join(format!("nap-{app}@1.web.1.service")).exists(), "the old unit file is left");
    let units = host.systemctl(&["list-units", "--all", "--plain", "--no-legend", &format!("nap-{app}@*")]);
    assert_eq!(units.stdout.lines().count(), 1, "{units:?}");
    assert!(units.stdout.contains(&format!("nap-{app}@2.web.1.service")), "{units:?}");
    // The unit's container is on its app's own network, as `docker run` put it.
    let unit = std::fs::read_to_string(host.unit_dir().join(format!("nap-{app}@2.web.1.service"))).expect("unit");
    assert!(unit.contains(&format!(" --network nap-{app} --ip ")), "{unit}");
    let networks = nap_tests::docker(&[
        "inspect",
        "-f",
        "{{range $name, $n := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &format!("nap-{app}-v2-web.1"),
    ]);
    assert_eq!(networks.stdout.trim(), format!("nap-{app}"));

    // systemctl restart, as an admin would.
    let container = format!("nap-{app}-v2-web.1");
    let before = started_at(&container);
    host.systemctl(&["restart", &format!("nap-{app}@2.web.1")]).assert_ok();
    assert!(wait_for_body(&url, "second", ANSWER));
    assert_ne!(started_at(&container), before, "systemctl restart did not restart the app");

    // A reboot: systemd starts the enabled unit again, on the same URL.
    let before = started_at(&container);
    host.reboot();
    assert!(wait_for_body(&url, "second", ANSWER), "the app did not come back after a reboot");
    assert_ne!(started_at(&container), before, "the app was not started again at boot");
}

#[test]
fn config_rollback_restart_and_destroy_under_systemd() {
    let host = SystemdHost::start();
    let gateway = gateway_on(&host);
    let admin = gateway.user("admin");
    let app = unique("sdops");
    let repo = AppRepo::new(AppKind::Web);
    repo.commit("index.html", "one\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    repo.commit("index.html", "two\n");
    repo.push(&gateway, &admin, &app, "master").assert_ok();

    let set = gateway.ssh(&admin, "nap", &["config", "set", &app, "GREETING=from-systemd"]);
    set.assert_ok();
    let url = set.stdout.split("live at ").nth(1).expect("url").trim().to_owned();
    assert!(wait_for_body(&format!("{url}cgi-bin/env"), "GREETING=from-systemd", ANSWER));
    assert!(host.systemctl(&["is-active", &format!("nap-{app}@3.web.1")]).stdout.starts_with("active"));

    let back = gateway.ssh(&admin, "nap", &["rollback", &app, "v1"]);
    back.assert_ok();
    let url = back.stdout.split("live at ").nth(1).expect("url").trim().to_owned();
    assert!(wait_for_body(&url, "one", ANSWER), "the answer did not change back");

    // restart starts v4 afresh as a unit of its own, and retires the old one.
    let restart = gateway.ssh(&admin, "nap", &["restart", &app, "--json"]);
    restart.assert_ok();
    let restart: serde_json::Value = serde_json::from_str(&restart.stdout).expect("json");
    assert_eq!(restart["container"], format!("nap-{app}-v4.1-web.1"));
    assert!(host.systemctl(&["is-active", &format!("nap-{app}@4.1.web.1")]).stdout.starts_with("active"));
    assert!(!host.unit_dir().join(format!("nap-{app}@4.web.1.service")).exists(), "the old unit is left");
    assert!(wait_for_body(restart["url"].as_str().expect("url"), "one", ANSWER));

    // `limits set` runs v5 as a unit whose container has them.
    gateway.ssh(&admin, "nap", &["limits", "set", &app, "memory=64m", "pids=64"]).assert_ok();
    let unit = std::fs::read_to_string(host.unit_dir().join(format!("nap-{app}@5.web.1.service"))).expect("unit");
    assert!(unit.contains("--memory=67108864 --memory-swap=67108864 --pids-limit=64 "), "{unit}");
    let format = "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}";
    let inspect = nap_tests::docker(&["inspect", "--format", format, &format!("nap-{app}-v5-web.1")]);
    assert_eq!(inspect.assert_ok().stdout.trim(), "67108864 64");

    gateway.ssh(&admin, "nap", &["apps", "destroy", &app, "--force"]).assert_ok();
    let leftovers: Vec<_> = std::fs::read_dir(host.unit_dir())
        .expect("unit dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&app))
        .collect();
    assert!(leftovers.is_empty(), "units left: {leftovers:?}");
    let wants = std::fs::read_dir(host.unit_dir().join("multi-user.target.wants")).expect("wants");
    assert!(wants.flatten().all(|e| !e.file_name().to_string_lossy().contains(&app)), "still enabled");
    let units = host.systemctl(&["list-units", "--all", "--plain", "--no-legend", &format!("nap-{app}@*")]);
    assert!(units.stdout.trim().is_empty(), "{units:?}");
    assert!(containers_of(&app).is_empty());
    assert!(!gateway.repo_path(&app).exists());
    assert!(std::fs::read_dir(host.env_dir()).expect("env dir").next().is_none(), "env files left");
}

#[test]
fn a_unit_that_fails_to_start_is_refused_with_its_state_and_log_and_the_old_one_keeps_serving() {
    let host = SystemdHost::start();
    let gateway = gateway_on(&host);
    let admin = gateway.user("admin");
    let app = unique("sdfail");
    let repo = AppRepo::new(AppKind::Web);
    let good = repo.push(&gateway, &admin, &app, "master");
    good.assert_ok();
    let url = good.url().expect("url");

    repo.become_kind(AppKind::Exits);
    let bad = repo.push(&gateway, &admin, &app, "master");
    bad.assert_failed_with("pre-receive hook declined");
    bad.assert_failed_with(&format!("nap-{app}@2.web.1.service is "));
    bad.assert_failed_with("crashing on purpose");
    bad.assert_failed_with(&format!("{app} keeps serving v1 at {url}"));
    assert!(wait_for_body(&url, "hello from web", ANSWER));
    assert!(!host.unit_dir().join(format!("nap-{app}@2.web.1.service")).exists(), "the failed unit is left");
    assert!(host.systemctl(&["is-active", &format!("nap-{app}@1.web.1")]).stdout.starts_with("active"));
}

#[test]
fn the_runner_defaults_to_systemd_when_it_is_on_the_bus_and_to_docker_otherwise() {
    let host = SystemdHost::start();
    // Each gateway removes its app's containers as it drops, at the closure's end.
    let admin_push = |settings: &str, app: &str| {
        let gateway = Gateway::builder().settings(settings).start();
        let admin = gateway.user("admin");
        AppRepo::new(AppKind::Web).push(&gateway, &admin, app, "master")
    };
    let detected = format!(
        "system_bus = \"{}\"\nunit_dir = \"{}\"\nenv_dir = \"{}\"\ndocker_cli = \"{}\"\n",
        host.bus_address(),
        host.unit_dir().display(),
        host.env_dir().display(),
        nap_tests::systemd::DOCKER_CLI
    );
    let app = unique("detect");
    let run = admin_push(&detected, &app);
    run.assert_ok();
    assert!(run.stderr.contains(&format!("Starting nap-{app}@1.web.1.service")), "{}", run.stderr);

    let nobody = "system_bus = \"unix:path=/nonexistent/bus\"\n";
    let app = unique("nobus");
    let run = admin_push(nobody, &app);
    run.assert_ok();
    assert!(run.stderr.contains(&format!("Starting nap-{app}-v1-web.1")), "{}", run.stderr);

    let app = unique("badbus");
    let run = admin_push(&format!("runner = \"systemd\"\n{nobody}"), &app);
    run.assert_failed_with("system bus unix:path=/nonexistent/bus:");
    run.assert_failed_with("pre-receive hook declined");
}

#[test]
fn the_unit_template_can_be_overridden_from_a_directory() {
    let host = SystemdHost::start();
    let templates = tempfile::tempdir().expect("temp dir");
    let builtin =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../units/app.service.tera")).expect("template");
    let custom = builtin.replace("Description=nap app", "Description=our custom nap app");
    assert_ne!(custom, builtin);
    std::fs::write(templates.path().join("app.service.tera"), custom).expect("write template");
    let gateway = Gateway::builder()
        .settings(&format!("{}units_dir = \"{}\"\n", host.settings(), templates.path().display()))
        .start();
    let admin = gateway.user("admin");
    let app = unique("custom");
    AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master").assert_ok();
    let shown = host.systemctl(&["show", "-p", "Description", &format!("nap-{app}@1.web.1")]);
    assert!(shown.stdout.starts_with("Description=our custom nap app"), "{shown:?}");
    let ps = gateway.ssh(&admin, "nap", &["ps", &app, "--json"]);
    ps.assert_ok();
    assert!(ps.stdout.contains(&format!("\"unit\": \"nap-{app}@1.web.1.service\"")), "{}", ps.stdout);
}

#[test]
fn a_procfile_app_runs_a_unit_per_instance_and_scales_them() {
    let host = SystemdHost::start();
    let gateway = gateway_on(&host);
    let admin = gateway.user("admin");
    let app = unique("units");
    let repo = AppRepo::new(AppKind::Procfile);
    let pushed = repo.push(&gateway, &admin, &app, "master");
    pushed.assert_ok();
    assert!(pushed.stderr.contains("migrated 3 tables"), "the release phase: {}", pushed.stderr);
    let active = |unit: &str| host.systemctl(&["is-active", unit]).stdout.starts_with("active");
    assert!(active(&format!("nap-{app}@1.web.1")) && active(&format!("nap-{app}@1.worker.1")));
    // The worker's unit runs the Procfile's words, quoted for systemd.
    let unit = std::fs::read_to_string(host.unit_dir().join(format!("nap-{app}@1.worker.1.service"))).expect("unit");
    assert!(unit.contains("\"sh\" \"-c\" \"while true; do echo working on $${QUEUE:-default}"), "{unit}");

    gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=2", "worker=0"]).assert_ok();
    assert!(active(&format!("nap-{app}@1.web.2")), "a unit for web.2");
    assert!(!host.unit_dir().join(format!("nap-{app}@1.worker.1.service")).exists(), "the worker's unit is left");
    let ps = gateway.ssh(&admin, "nap", &["ps", &app]);
    assert!(ps.assert_ok().stdout.contains(&format!("nap-{app}@1.web.2.service")), "{}", ps.stdout);
    let mut names = containers_of(&app);
    names.sort();
    assert_eq!(names, [format!("nap-{app}-v1-web.1"), format!("nap-{app}-v1-web.2")]);
}
