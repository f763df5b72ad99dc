//! TEST DOUBLE: a recording stand-in for `kubectl`, because no Kubernetes API server can run on the test machines.
//!
//! The Kubernetes runner's end-to-end tests put it on nap's PATH. It keeps
//! what is applied as JSON files under `$NAP_TEST_KUBECTL_DIR/objects/`,
//! appends every call (arguments and stdin) to `$NAP_TEST_KUBECTL_DIR/calls.jsonl`,
//! and answers the few verbs nap uses the way kubectl 1.3x does. A file
//! `$NAP_TEST_KUBECTL_DIR/not-ready` makes rollouts fail; a pod (the release
//! phase's) runs nothing and ends at once, with the exit code in the file
//! `$NAP_TEST_KUBECTL_DIR/pod-exit` (0 without it), but one with input
//! (`run`) runs until `attach -i`, which echoes its input. Real-cluster tests
//! use the real kubectl instead (they run when KUBECONFIG is set).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn main() {
    let dir = PathBuf::from(
        std::env::var("NAP_TEST_KUBECTL_DIR").unwrap_or_else(|_| fail("NAP_TEST_KUBECTL_DIR is not set")),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stdin = String::new();
    if args.iter().any(|a| a == "-" || a == "--filename=-") {
        std::io::stdin().read_to_string(&mut stdin).unwrap_or_else(|e| fail(&format!("stdin: {e}")));
    }
    let mut calls = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("calls.jsonl"))
        .unwrap_or_else(|e| fail(&format!("calls.jsonl: {e}")));
    let _ = writeln!(calls, "{}", json!({ "args": args, "stdin": stdin }));
    std::fs::create_dir_all(dir.join("objects")).unwrap_or_else(|e| fail(&format!("objects: {e}")));

    // Global flags first, as nap passes them; the verb follows.
    let words = nap_tests::kubectl_words(&args);
    let flag = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned));
    let stand_in = StandIn { dir: dir.clone(), not_ready: dir.join("not-ready").exists() };
    match words.as_slice() {
        ["apply", ..] => stand_in.apply(&stdin),
        ["rollout", "status", workload] if stand_in.not_ready => {
            fail(&format!("deployment {:?} exceeded its progress deadline", name_of(workload)))
        }
        ["rollout", "status", workload] => println!("deployment {:?} successfully rolled out", name_of(workload)),
        ["rollout", "undo", workload] => stand_in.undo(workload),
        ["rollout", "history", workload] => {
            println!("deployment.apps/{}\nREVISION  CHANGE-CAUSE\n1         <none>", name_of(workload));
        }
        ["set", "image", workload, _assignment] => println!("deployment.apps/{} image updated", name_of(workload)),
        ["rollout", "restart", workload] => println!("deployment.apps/{} restarted", name_of(workload)),
        ["get", "pods", ..] => stand_in.pods(&selector(&args)),
        ["get", "deployments", ..] => stand_in.list("Deployment", &selector(&args)),
        ["get", kind, name] => stand_in.get(kind, name),
        ["delete", targets @ ..] => stand_in.delete(targets, flag("selector").or_else(|| selector_arg(&args))),
        ["logs", ..] => println!("[pod/stand-in/app] hello from the stand-in kubectl"),
        // The pod's command is not run: its input comes back as its output.
        ["attach", "-i", pod] => {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::stdout());
            let _ = std::fs::write(dir.join(format!("attached.{}", name_of(pod))), "");
        }
        _ => fail(&format!("the stand-in kubectl does not know {args:?}")),
    }
}

struct StandIn {
    dir: PathBuf,
    not_ready: bool,
}

impl StandIn {
    fn path(&self, kind: &str, name: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{}.{name}.json", kind.to_lowercase()))
    }

    fn apply(&self, yaml: &str) {
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value: Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| fail(&format!("yaml: {e}")));
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_else(|| fail("a document without kind")).to_owned();
            let name = value["metadata"]["name"].as_str().unwrap_or_else(|| fail("a document without name")).to_owned();
            let path = self.path(&kind, &name);
            let verb = if path.exists() { "configured" } else { "created" };
            if path.exists() {
                // kept for `rollout undo`
                let _ = std::fs::copy(&path, path.with_extension("previous"));
            }
            write_json(&path, &value);
            let resource = match kind.as_str() {
                "Deployment" => "deployment.apps",
                other => &other.to_lowercase(),
            };
            println!("{resource}/{name} {verb}");
        }
    }

    fn undo(&self, workload: &str) {
        let path = self.path("deployment", name_of(workload));
        let previous = path.with_extension("previous");
        // Only Deployments this stand-in was given have a history it keeps.
        if path.exists() && !previous.exists() {
            fail(&format!("no rollout history found for {workload}"));
        }
        let _ = std::fs::rename(previous, &path);
        println!("deployment.apps/{} rolled back", name_of(workload));
    }

    fn get(&self, kind: &str, name: &str) {
        let kind = match kind {
            "service" | "svc" => "Service",
            "replicationcontroller" | "rc" => "ReplicationController",
            "deployment" => "Deployment",
            "pod" | "pods" => "Pod",
            other => fail(&format!("the stand-in kubectl does not get {other}")),
        };
        let path = self.path(kind, name);
        let mut object = read_json(&path).unwrap_or_else(|| {
            fail(&format!("Error from server (NotFound): {}s {name:?} not found", kind.to_lowercase()))
        });
        object["metadata"]["namespace"] = json!("default");
        match kind {
            "Service" => object["spec"]["ports"][0]["nodePort"] = json!(30080),
            // A pod with input runs until something attached to it.
            "Pod"
                if object["spec"]["containers"][0]["stdin"] == json!(true)
                    && !self.dir.join(format!("attached.{name}")).exists() =>
            {
                object["status"] = json!({
                    "phase": "Running",
                    "containerStatuses": [{ "name": "one-off", "image": "", "imageID": "", "ready": true,
                        "restartCount": 0, "state": { "running": { "startedAt": "2026-11-23T00:00:00Z" } } }],
                });
            }
            "Pod" => {
                let code: i64 = std::fs::read_to_string(self.dir.join("pod-exit"))
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0);
                let terminated = json!({ "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" } });
                object["status"] = json!({
                    "phase": if code == 0 { "Succeeded" } else { "Failed" },
                    "containerStatuses": [{ "name": "release", "image": "", "imageID": "", "ready": false,
                        "restartCount": 0, "state": { "terminated": terminated } }],
                });
            }
            "ReplicationController" => {
                let wanted = object["spec"]["replicas"].clone();
                object["status"] =
                    json!({ "replicas": wanted, "readyReplicas": if self.not_ready { json!(0) } else { wanted } });
            }
            _ => {}
        }
        println!("{object}");
    }

    /// Every object applied so far: kind, name, its own labels, itself.
    fn objects(&self) -> Vec<(String, String, BTreeMap<String, String>, Value)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("objects")).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(object) = read_json(&path) else { continue };
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let labels = |v: &Value| serde_json::from_value(v.clone()).unwrap_or_default();
            let own = labels(&object["metadata"]["labels"]);
            found.push((kind, name, own, object));
        }
        found
    }

    /// `get KINDs --selector S`: the objects of a kind whose own labels match.
    fn list(&self, kind: &str, selector: &str) {
        let items: Vec<Value> = self
            .objects()
            .into_iter()
            .filter(|(k, _, labels, _)| k == kind && matches(selector, labels))
            .map(|(_, _, _, object)| object)
            .collect();
        println!("{}", json!({ "apiVersion": "v1", "kind": "List", "metadata": {}, "items": items }));
    }

    fn pods(&self, selector: &str) {
        let mut items = Vec::new();
        for (kind, name, _, object) in self.objects() {
            if kind != "Deployment" && kind != "ReplicationController" {
                continue;
            }
            let labels: BTreeMap<String, String> =
                serde_json::from_value(object["spec"]["template"]["metadata"]["labels"].clone()).unwrap_or_default();
            if !matches(selector, &labels) {
                continue;
            }
            let state = if self.not_ready {
                json!({ "waiting": { "reason": "ErrImagePull", "message": "the stand-in cannot pull" } })
            } else {
                json!({ "running": { "startedAt": "2026-11-23T00:00:00Z" } })
            };
            items.push(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": format!("{name}-stand-in"), "labels": labels },
                "status": {
                    "phase": if self.not_ready { "Pending" } else { "Running" },
                    "startTime": "2026-11-23T00:00:00Z",
                    "containerStatuses": [{ "name": "app", "image": "", "imageID": "", "ready": !self.not_ready, "restartCount": 0, "state": state }],
                },
            }));
        }
        println!("{}", json!({ "apiVersion": "v1", "kind": "List", "metadata": {}, "items": items }));
    }

    fn delete(&self, targets: &[&str], selector: Option<String>) {
        let mut deleted = Vec::new();
        match selector {
            Some(selector) => {
                let kinds: Vec<String> = targets.iter().flat_map(|t| t.split(',')).map(kind_of).collect();
                for (kind, name, labels, _) in self.objects() {
                    let pods = kinds.iter().any(|k| k == "Pod");
                    if (kinds.contains(&kind) || pods) && matches(&selector, &labels) {
                        if !pods {
                            let _ = std::fs::remove_file(self.path(&kind, &name));
                        }
                        deleted.push(format!("{}/{name}", kind.to_lowercase()));
                    }
                }
            }
            None => {
                for target in targets {
                    let Some((kind, name)) = target.split_once('/') else { continue };
                    let path = self.path(&kind_of(kind), name);
                    if path.exists() {
                        let _ = std::fs::remove_file(path);
                        deleted.push(format!("{kind}/{name}"));
                    }
                }
            }
        }
        for line in deleted {
            println!("{line}");
        }
    }
}

fn kind_of(word: &str) -> String {
    match word {
        "deployment" | "deployments" => "Deployment",
        "replicationcontroller" | "rc" => "ReplicationController",
        "service" | "svc" => "Service",
        "pods" | "pod" => "Pod",
        other => other,
    }
    .to_owned()
}

fn name_of(workload: &str) -> &str {
    workload.split_once('/').map_or(workload, |(_, name)| name)
}

/// `--selector S` or `--selector=S`.
fn selector(args: &[String]) -> String {
    selector_arg(args).unwrap_or_default()
}

fn selector_arg(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--selector") {
        Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
        Some("") => args.get(i + 1).cloned(),
        _ => None,
    })
}

/// Kubernetes' label selector: `k=v`, `k!=v` and `k`, joined by commas.
fn matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((key, value)) = term.split_once("!=") {
            labels.get(key).is_none_or(|v| v != value)
        } else if let Some((key, value)) = term.split_once('=') {
            labels.get(key).is_some_and(|v| v == value)
        } else {
            labels.contains_key(term)
        }
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, value.to_string()).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
