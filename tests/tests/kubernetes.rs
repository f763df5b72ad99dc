//! The Kubernetes runner over real ssh, git, dockerd and the registry. No
//! API server runs here, so `kubectl` is the recording stand-in (a test
//! double, `tests/src/bin/kubectl.rs`), and every manifest nap applies is
//! checked against the official schema (the k8s-openapi types, with no
//! unknown field allowed). The last test deploys to the real cluster that
//! `KUBECONFIG` names, with the real kubectl; it is ignored unless asked for
//! (`--run-ignored all` with nextest, `-- --include-ignored` with cargo
//! test; `scripts/test.sh` does either when `KUBECONFIG` is set).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ReplicationController, Service};
use nap_runner::manifest::{self, Manifest};
use nap_tests::{AppKind, AppRepo, Gateway, Key, REGISTRY, StandInCluster, etcd_endpoint, etcdctl, unique};

/// A gateway whose releases go to the stand-in cluster.
fn gateway(cluster: &StandInCluster, extra: &str) -> (Gateway, Key) {
    let settings = format!(
        "runner = \"kubernetes\"\nregistry = \"{REGISTRY}\"\nkubeconfig = \"{}\"\nk8s_namespace = \"shop-ns\"\n{extra}",
        cluster.kubeconfig().display()
    );
    let env = cluster.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gateway = Gateway::builder().settings(&settings).env(&env).start();
    let admin = gateway.user(&unique("admin"));
    (gateway, admin)
}

/// Every manifest the stand-in was given, checked against the schema, but
/// the app's NetworkPolicy that comes first in each.
fn applied(cluster: &StandInCluster) -> Vec<Vec<Manifest>> {
    every_apply(cluster)
        .into_iter()
        .map(|manifests| manifests.into_iter().filter(|m| !matches!(m, Manifest::NetworkPolicy(_))).collect())
        .collect()
}

/// Every manifest the stand-in was given, checked against the schema.
fn every_apply(cluster: &StandInCluster) -> Vec<Vec<Manifest>> {
    cluster
        .calls_of(&["apply"])
        .iter()
        .map(|call| manifest::parse(&call.stdin, "applied").unwrap_or_else(|e| panic!("{e}:\n{}", call.stdin)))
        .collect()
}

/// The last pod named `name` the stand-in was given, checked against the schema.
fn applied_pod(cluster: &StandInCluster, name: &str) -> Box<k8s_openapi::api::core::v1::Pod> {
    let mut pods = applied(cluster).into_iter().flatten().filter_map(|manifest| match manifest {
        Manifest::Pod(pod) if pod.metadata.name.as_deref() == Some(name) => Some(pod),
        _ => None,
    });
    pods.next_back().unwrap_or_else(|| panic!("no pod {name} was applied"))
}

fn image_of(deployment: &Deployment) -> String {
    let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec");
    pod.containers[0].image.clone().expect("image")
}

#[test]
fn a_push_applies_a_checked_deployment_and_service_with_the_users_kubeconfig_and_waits_for_the_rollout() {
    let cluster = StandInCluster::new();
    let root = unique("k8s-deploy");
    let (gateway, admin) =
        gateway(&cluster, &format!("store = \"etcd://{}\"\npublish_rollout = \"{root}/dev\"\n", etcd_endpoint()));
    gateway.cleanup().etcd_prefix(format!("/k8s-deploy/{root}/"));
    let app = unique("kube");
    let push = AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master");
    push.assert_ok();
    assert!(
        push.stderr.contains(&format!("Applying deployment/{app} and service/{app} in namespace shop-ns")),
        "{push:?}"
    );
    assert!(push.stderr.contains("successfully rolled out"), "kubectl's progress reaches the pusher: {push:?}");
    assert_eq!(push.url().as_deref(), Some("http://127.0.0.1:30080/"), "the Service's NodePort is the URL");

    let apply = &cluster.calls_of(&["apply"])[0];
    let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig().display());
    assert!(apply.args.contains(&kubeconfig) && apply.args.contains(&"--namespace=shop-ns".to_owned()), "{apply:?}");
    let status = &cluster.calls_of(&["rollout", "status"])[0];
    assert_eq!(status.words(), ["rollout", "status", &format!("deployment/{app}")]);

    let manifests = applied(&cluster);
    let [Manifest::Deployment(deployment), Manifest::Service(service)] = manifests[0].as_slice() else {
        panic!("expected a Deployment and a Service: {manifests:?}");
    };
    assert_eq!(image_of(deployment), format!("{REGISTRY}/{app}:v1"));
    let labels = service.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector");
    assert_eq!(labels.get("nap.app"), Some(&app));
    // The app's own network: its NetworkPolicy, first in each release's
    // manifests, selects its pods by the label every one of them carries.
    let network = format!("nap-{app}");
    let every = every_apply(&cluster);
    let [Manifest::NetworkPolicy(policy), Manifest::Deployment(_), Manifest::Service(_)] = every[0].as_slice() else {
        panic!("the NetworkPolicy comes first: {every:?}");
    };
    assert_eq!(policy.metadata.name.as_deref(), Some(network.as_str()));
    let selected = policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref()).and_then(|s| s.match_labels.clone());
    assert_eq!(selected.and_then(|l| l.get("nap.network").cloned()).as_ref(), Some(&network));
    let pod_labels = deployment.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
    assert_eq!(pod_labels.and_then(|l| l.get("nap.network").cloned()).as_ref(), Some(&network));

    // The CI/CD flow's rollout key, in the write-up's own field names.
    let key = format!("/k8s-deploy/{root}/rollout/dev");
    let published = etcdctl(&["get", "--print-value-only", &key]);
    let published: serde_json::Value = serde_json::from_str(published.stdout.trim()).expect("rollout JSON");
    assert_eq!(
        published,
        serde_json::json!({
            "k8sNamespace": "shop-ns", "appParent": root, "appName": app, "imageLatest": format!("{REGISTRY}/{app}:v1"),
        })
    );

    // Operating the app: config and rollback are new releases applied the same way.
    gateway.ssh(&admin, "nap", &["config", "set", &app, "GREETING='hi there'"]).assert_ok();
    gateway.ssh(&admin, "nap", &["rollback", &app, "v1"]).assert_ok();
    let manifests = applied(&cluster);
    assert_eq!(manifests.len(), 3, "push, config set, rollback");
    let Manifest::Deployment(v2) = &manifests[1][0] else { panic!("{manifests:?}") };
    let env = v2.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|p| p.containers[0].env.clone());
    assert!(format!("{env:?}").contains("hi there"), "{env:?}");
    let Manifest::Deployment(v3) = &manifests[2][0] else { panic!("{manifests:?}") };
    assert_eq!(v3.metadata.labels.as_ref().and_then(|l| l.get("nap.release")).map(String::as_str), Some("3"));
    assert!(!format!("{:?}", v3.spec).contains("hi there"), "rollback to v1 runs v1's config");
    // `limits set` is a release too, with the container's resources.
    gateway.ssh(&admin, "nap", &["limits", "set", &app, "memory=256m", "cpus=0.5"]).assert_ok();
    let manifests = applied(&cluster);
    let Manifest::Deployment(v4) = &manifests[3][0] else { panic!("{manifests:?}") };
    let pod = v4.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec");
    let limits = pod.containers[0].resources.as_ref().and_then(|r| r.limits.clone()).expect("resources.limits");
    let limits: Vec<_> = limits.iter().map(|(name, value)| (name.as_str(), value.0.as_str())).collect();
    assert_eq!(limits, [("cpu", "500m"), ("memory", "268435456")]);

    let ps = gateway.ssh(&admin, "nap", &["ps", &app]);
    ps.assert_ok();
    assert!(ps.stdout.contains("POD") && ps.stdout.contains(&format!("{app}-stand-in")), "{ps:?}");
    assert!(ps.stdout.contains("running"), "{ps:?}");
    let logs = gateway.ssh(&admin, "nap", &["logs", &app, "--tail", "5"]);
    assert!(logs.assert_ok().stdout.contains("hello from the stand-in kubectl"), "{logs:?}");
    let logs_call = cluster.calls_of(&["logs"]).pop().expect("kubectl logs");
    assert!(
        logs_call.args.contains(&format!("--selector=nap.app={app}"))
            && logs_call.args.contains(&"--tail=5".to_owned())
    );
    gateway.ssh(&admin, "nap", &["restart", &app]).assert_ok();
    assert_eq!(cluster.calls_of(&["rollout", "restart"]).len(), 1);

    assert!(cluster.object("NetworkPolicy", &network).is_some());
    gateway.ssh(&admin, "nap", &["apps", "destroy", &app, "--force"]).assert_ok();
    assert!(cluster.object("Deployment", &app).is_none() && cluster.object("Service", &app).is_none());
    assert!(cluster.object("NetworkPolicy", &network).is_none(), "the app's network goes with it");
}

#[test]
fn a_release_that_does_not_become_ready_is_undone_and_the_previous_one_keeps_serving() {
    let cluster = StandInCluster::new();
    let (gateway, admin) = gateway(&cluster, "");
    let app = unique("kube");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    let good = repo.head();

    cluster.set_not_ready(true);
    repo.commit("index.html", "never ready\n");
    let push = repo.push(&gateway, &admin, &app, "master");
    push.assert_failed_with(&format!("deployment/{app} did not become ready"));
    push.assert_failed_with("exceeded its progress deadline");
    push.assert_failed_with("ErrImagePull the stand-in cannot pull");
    push.assert_failed_with("pre-receive hook declined");
    assert_eq!(gateway.branch_sha(&app, "master"), Some(good), "the ref moved");
    assert_eq!(cluster.calls_of(&["rollout", "undo"]).len(), 1, "the failed rollout is undone");
    let deployment: Deployment =
        serde_json::from_value(cluster.object("Deployment", &app).expect("deployment")).expect("schema");
    assert_eq!(image_of(&deployment), format!("{REGISTRY}/{app}:v1"), "the cluster is back on v1");

    cluster.set_not_ready(false);
    let releases = gateway.ssh(&admin, "nap", &["releases", &app, "--json"]);
    let releases: serde_json::Value = serde_json::from_str(&releases.assert_ok().stdout).expect("json");
    assert_eq!(releases[0]["status"], "failed");
    assert_eq!(releases[1]["status"], "succeeded");
}

#[test]
fn the_rc_kind_applies_a_replication_controller_per_release_and_retires_the_previous_one() {
    let cluster = StandInCluster::new();
    let (gateway, admin) = gateway(&cluster, "k8s_kind = \"rc\"\n");
    let app = unique("kube");
    let repo = AppRepo::new(AppKind::Web);
    repo.push(&gateway, &admin, &app, "master").assert_ok();
    repo.commit("index.html", "v2\n");
    let second = repo.push(&gateway, &admin, &app, "master");
    second.assert_ok();
    assert!(second.stderr.contains(&format!("1 of 1 pods of {app}-v2 ready")), "{second:?}");
    assert!(second.stderr.contains(&format!("Retired replicationcontroller/{app}-v1")), "{second:?}");

    let rc: ReplicationController =
        serde_json::from_value(cluster.object("ReplicationController", &format!("{app}-v2")).expect("rc"))
            .expect("schema");
    let selector = rc.spec.and_then(|s| s.selector).expect("selector");
    assert_eq!(selector.get("nap.release").map(String::as_str), Some("2"), "an RC selects only its own release's pods");
    assert!(cluster.object("ReplicationController", &format!("{app}-v1")).is_none());
    let service: Service = serde_json::from_value(cluster.object("Service", &app).expect("service")).expect("schema");
    assert!(!service.spec.and_then(|s| s.selector).expect("selector").contains_key("nap.release"));
    for manifests in applied(&cluster) {
        assert!(matches!(manifests.as_slice(), [Manifest::ReplicationController(_), Manifest::Service(_)]));
    }
}

#[test]
fn a_template_kubernetes_would_refuse_or_a_missing_registry_refuses_the_push_before_anything_is_applied() {
    let cluster = StandInCluster::new();
    let units = tempfile::tempdir().expect("temp dir");
    let builtin =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../units/k8s-service.yaml.tera")).expect("read");
    let misspelt = builtin.replace("  selector:", "  selecter:");
    std::fs::write(units.path().join("k8s-service.yaml.tera"), misspelt).expect("write");
    let (gateway, admin) = gateway(&cluster, &format!("units_dir = \"{}\"\n", units.path().display()));
    let app = unique("kube");
    let push = AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master");
    push.assert_failed_with(&format!(
        "release v1 of {app}: Service has fields Kubernetes does not know: spec.selecter"
    ));
    assert!(cluster.calls_of(&["apply"]).is_empty(), "nothing reaches the cluster");

    let env = cluster.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let unregistered = Gateway::builder().settings("runner = \"kubernetes\"\n").env(&env).start();
    let admin = unregistered.user("admin");
    let push = AppRepo::new(AppKind::Web).push(&unregistered, &admin, &app, "master");
    push.assert_failed_with("the kubernetes runner needs a registry the cluster can pull from");
    assert!(!push.stderr.contains("Building"), "refused before the build: {push:?}");
}

/// Needs a real cluster: `KUBECONFIG` names it, and its nodes can pull from
/// `NAP_TEST_K8S_REGISTRY` (default: the test registry).
#[test]
#[ignore = "needs a real Kubernetes cluster: set KUBECONFIG and run with --run-ignored all (nextest) or -- --include-ignored"]
fn a_push_deploys_to_the_real_cluster_in_kubeconfig() {
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        panic!("KUBECONFIG is not set: this test deploys to a real Kubernetes cluster, and needs its kubeconfig")
    });
    let registry = std::env::var("NAP_TEST_K8S_REGISTRY").unwrap_or_else(|_| REGISTRY.into());
    let namespace = std::env::var("NAP_TEST_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
    let gateway = Gateway::builder().settings(&format!(
        "runner = \"kubernetes\"\nregistry = \"{registry}\"\nkubeconfig = \"{kubeconfig}\"\nk8s_namespace = \"{namespace}\"\nk8s_timeout = 180\n"
    )).start();
    let admin = gateway.user("admin");
    let app = unique("kube");
    // The cluster keeps what a failed run applied unless it is deleted.
    gateway.cleanup().command(&[
        "kubectl",
        &format!("--kubeconfig={kubeconfig}"),
        &format!("--namespace={namespace}"),
        "delete",
        "deployment,replicationcontroller,service,networkpolicy",
        &format!("--selector=nap.app={app}"),
        "--ignore-not-found",
    ]);
    let push = AppRepo::new(AppKind::Web).push(&gateway, &admin, &app, "master");
    push.assert_ok();
    let ps = gateway.ssh(&admin, "nap", &["ps", &app]);
    assert!(ps.assert_ok().stdout.contains("running"), "{ps:?}");
    gateway.ssh(&admin, "nap", &["apps", "destroy", &app, "--force"]).assert_ok();
}

/// Process types on Kubernetes: web is the app's Deployment (with the
/// Procfile's command as its args, and as many replicas as the formation
/// says), every other running type a Deployment APP-TYPE whose pods the
/// Service never selects; `ps scale` applies the new counts and deletes the
/// Deployment of a type scaled to 0.
#[test]
fn process_types_are_deployments_that_ps_scale_changes() {
    let cluster = StandInCluster::new();
    let (gateway, admin) = gateway(&cluster, "");
    let app = unique("kprocs");
    let repo = AppRepo::new(AppKind::Procfile);
    // The release phase is a pod of the new image, run to its end and
    // deleted, before the workloads are applied.
    cluster.set_pod_exit(3);
    let refused = repo.push(&gateway, &admin, &app, "master");
    assert!(refused.stderr.contains("the release phase exited with code 3"), "{refused:?}");
    assert!(cluster.object("Deployment", &app).is_none(), "nothing applied after a failed release phase");
    cluster.set_pod_exit(0);
    repo.commit(
        "Procfile",
        "web: sh -c \"exec httpd -f -p $PORT -h /www\"\nworker: sh -c \"sleep 600\"\nrelease: /app/migrate --all\n",
    );
    let pushed = repo.push(&gateway, &admin, &app, "master");
    assert!(pushed.assert_ok().stderr.contains("Release phase: /app/migrate --all"), "{pushed:?}");
    assert!(pushed.stderr.contains("hello from the stand-in kubectl"), "the pod's output: {pushed:?}");
    // The refused first push left nothing: this is v1 again.
    let pod_name = format!("{app}-v1-release");
    assert!(cluster.object("Pod", &pod_name).is_none(), "the release phase's pod is deleted");
    let pod = applied_pod(&cluster, &pod_name);
    let spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.containers[0].args.as_deref(), Some(&["/app/migrate".to_owned(), "--all".into()][..]));
    let applies = cluster.calls_of(&["apply"]);
    let pod_at = applies.iter().rposition(|c| c.stdin.contains("kind: Pod") && c.stdin.contains(&pod_name));
    let web_at = applies.iter().position(|c| c.stdin.contains("kind: Deployment"));
    assert!(pod_at < web_at && pod_at.is_some(), "the pod runs before the workloads are applied");

    let deployment = |name: &str| -> Deployment {
        serde_json::from_value(cluster.object("Deployment", name).unwrap_or_else(|| panic!("no deployment {name}")))
            .expect("a Deployment")
    };
    let web = deployment(&app);
    let pod = web.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod");
    assert_eq!(
        pod.containers[0].args.as_deref(),
        Some(&["sh".to_owned(), "-c".into(), "exec httpd -f -p $PORT -h /www".into()][..])
    );
    let worker = deployment(&format!("{app}-worker"));
    let spec = worker.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1), "app.json's formation runs one worker");
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("labels");
    assert_eq!(labels.get("nap.process-of"), Some(&app));
    assert_eq!(labels.get("nap.app"), None, "the Service must not select a worker");
    let container = &spec.template.spec.as_ref().expect("pod").containers[0];
    assert!(container.ports.is_none() && !container.env.iter().flatten().any(|v| v.name == "PORT"), "{container:?}");
    for call in applied(&cluster) {
        assert!(!call.is_empty(), "every apply is checked against the schema");
    }
    let ps = gateway.ssh(&admin, "nap", &["ps", &app]);
    assert!(ps.assert_ok().stdout.lines().any(|l| l.starts_with("worker")), "{}", ps.stdout);

    // `run`: a pod of the release with input attached (`kubectl attach -i`),
    // its exit code the command's, deleted afterwards.
    cluster.set_pod_exit(5);
    let ran = gateway.ssh_with_input(&admin, "nap", &["run", &app, "--", "cat"], "hello cluster\n");
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(5), "hello cluster\n"), "{ran:?}");
    cluster.set_pod_exit(0);
    let attach = cluster.calls_of(&["attach"]).pop().expect("kubectl attach");
    let pod_name = attach.words()[2].trim_start_matches("pod/").to_owned();
    assert!(pod_name.starts_with(&format!("{app}-v1-run-")), "{pod_name}");
    assert!(cluster.object("Pod", &pod_name).is_none(), "the one-off pod is deleted");
    let one_off = applied_pod(&cluster, &pod_name);
    let container = &one_off.spec.as_ref().expect("spec").containers[0];
    assert_eq!((container.stdin, container.args.as_deref()), (Some(true), Some(&["cat".to_owned()][..])));

    gateway.ssh(&admin, "nap", &["ps", "scale", &app, "web=3", "worker=0"]).assert_ok();
    assert_eq!(deployment(&app).spec.and_then(|s| s.replicas), Some(3));
    assert!(cluster.object("Deployment", &format!("{app}-worker")).is_none(), "worker=0 deletes its Deployment");
    gateway
        .ssh(&admin, "nap", &["ps", "scale", &app, "web=0"])
        .assert_failed_with("error: start failed: on Kubernetes an app runs at least one web pod");
    assert_eq!(deployment(&app).spec.and_then(|s| s.replicas), Some(3), "a refused scale changes nothing");
}
