//! The recording stand-in `kubectl` (`src/bin/kubectl.rs`, a test double:
//! no Kubernetes API server runs here), set up for one test.

use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

use crate::nap_bin;

/// One stand-in "cluster": its own record of calls and applied objects.
pub struct StandInCluster {
    dir: TempDir,
}

/// One recorded `kubectl` call.
#[derive(Debug, Clone)]
pub struct KubectlCall {
    pub args: Vec<String>,
    pub stdin: String,
}

impl KubectlCall {
    /// The call's words without flags: `["rollout", "status", "deployment/x"]`.
    pub fn words(&self) -> Vec<&str> {
        kubectl_words(&self.args)
    }

    /// The namespace given with `-n` or `--namespace=`.
    pub fn namespace(&self) -> Option<&str> {
        let at = self.args.iter().position(|a| a == "-n");
        at.and_then(|at| self.args.get(at + 1))
            .map(String::as_str)
            .or_else(|| self.args.iter().find_map(|a| a.strip_prefix("--namespace=")))
    }
}

/// The words of a kubectl call without its flags: `--flag`, `--flag=value`,
/// `-` (stdin) and `-n NAMESPACE`.
pub fn kubectl_words(args: &[String]) -> Vec<&str> {
    let mut words = Vec::new();
    let mut args = args.iter().map(String::as_str);
    while let Some(arg) = args.next() {
        match arg {
            "-n" => {
                args.next();
            }
            "-" => {}
            flag if flag.starts_with("--") => {}
            word => words.push(word),
        }
    }
    words
}

impl Default for StandInCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl StandInCluster {
    pub fn new() -> Self {
        StandInCluster { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// The environment that puts the stand-in first on nap's PATH.
    pub fn env(&self) -> Vec<(String, String)> {
        let bin_dir = nap_bin().parent().expect("target dir").to_path_buf();
        assert!(
            bin_dir.join("kubectl").exists(),
            "the stand-in kubectl is missing: run `cargo build --workspace --bins`"
        );
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        vec![("PATH".into(), path), ("NAP_TEST_KUBECTL_DIR".into(), self.dir.path().display().to_string())]
    }

    /// A kubeconfig path to hand nap; the stand-in only records it.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn calls(&self) -> Vec<KubectlCall> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line).expect("a recorded call");
                KubectlCall {
                    args: serde_json::from_value(value["args"].clone()).expect("args"),
                    stdin: value["stdin"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect()
    }

    /// The calls whose words start with `verb`, e.g. `["rollout", "undo"]`.
    pub fn calls_of(&self, verb: &[&str]) -> Vec<KubectlCall> {
        self.calls().into_iter().filter(|c| c.words().starts_with(verb)).collect()
    }

    /// An applied object as the stand-in keeps it.
    pub fn object(&self, kind: &str, name: &str) -> Option<Value> {
        let path = self.dir.path().join("objects").join(format!("{}.{name}.json", kind.to_lowercase()));
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// From now on, rollouts do not become ready (or do again).
    /// The exit code the stand-in's pods (release phases) end with.
    pub fn set_pod_exit(&self, code: i32) {
        std::fs::write(self.dir.path().join("pod-exit"), code.to_string()).expect("write pod-exit");
    }

    pub fn set_not_ready(&self, not_ready: bool) {
        let flag = self.dir.path().join("not-ready");
        if not_ready {
            std::fs::write(flag, "").expect("write flag");
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }
}
