//! Drop guards for what a test makes outside its temp dirs: keys in the
//! shared etcd, containers and images on the host's dockerd, objects in a
//! real cluster. They go when the guard drops, so also when an assert fails
//! half-way. Only names the test owns are removed (its unique prefixes, apps,
//! containers and image names), never what a listing of the shared services
//! happens to show: tests run side by side on them.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::{etcd_endpoint, unique};

/// What one test made and removes when this drops. Declare it before what
/// could still write (gateways, watchers), so that it drops after them.
#[derive(Debug, Default)]
pub struct Cleanup {
    owned: Mutex<Owned>,
}

#[derive(Debug, Default)]
struct Owned {
    /// Prefixes in the shared etcd, each ending in `/`.
    etcd_prefixes: BTreeSet<String>,
    /// Single keys in the shared etcd.
    etcd_keys: BTreeSet<String>,
    /// Apps whose containers (label `nap.app`) and images go.
    apps: BTreeSet<String>,
    containers: BTreeSet<String>,
    /// `docker images --filter reference=...` patterns.
    images: BTreeSet<String>,
    /// Commands run last, e.g. a `kubectl delete` in a real cluster.
    commands: Vec<Vec<String>>,
}

/// Prefixes that hold every test's keys: deleting one would race them all.
const SHARED_PREFIXES: [&str; 8] =
    ["/", "/nap/", "/nap/apps/", "/nap/keys/", "/nap/locks/", "/k8s-deploy/", "/commiter/", "/assigner/"];

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup::default()
    }

    /// A root in the shared etcd that is this test's alone, `/NAME-RANDOM`
    /// (keys go under `ROOT/`), and the guard that deletes it.
    pub fn etcd_root(name: &str) -> (String, Cleanup) {
        let root = format!("/{}", unique(name));
        let cleanup = Cleanup::new();
        cleanup.etcd_prefix(format!("{root}/"));
        (root, cleanup)
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        // A test that panicked while holding the lock still gets cleaned up.
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deletes `prefix` (a directory: it must end in `/`, and be the test's
    /// own, not one of nap's shared roots) from the shared etcd.
    #[track_caller]
    pub fn etcd_prefix(&self, prefix: impl Into<String>) -> &Self {
        let prefix = prefix.into();
        assert!(
            prefix.starts_with('/') && prefix.ends_with('/'),
            "an etcd prefix to delete is a /directory/: {prefix:?}"
        );
        assert!(!SHARED_PREFIXES.contains(&prefix.as_str()), "{prefix} holds other tests' keys too");
        self.owned().etcd_prefixes.insert(prefix);
        self
    }

    /// Deletes one key from the shared etcd.
    pub fn etcd_key(&self, key: impl Into<String>) -> &Self {
        self.owned().etcd_keys.insert(key.into());
        self
    }

    /// Removes the containers nap ran for `app` (label `nap.app`) and the
    /// images it built for it.
    pub fn app(&self, app: &str) -> &Self {
        self.owned().apps.insert(app.to_owned());
        self
    }

    /// Removes the container `name`, running or not.
    pub fn container(&self, name: impl Into<String>) -> &Self {
        self.owned().containers.insert(name.into());
        self
    }

    /// Removes the local images whose name matches `reference` (a `docker
    /// images` reference filter: `REGISTRY/NAME-*`, or one `NAME:TAG`).
    pub fn images(&self, reference: impl Into<String>) -> &Self {
        self.owned().images.insert(reference.into());
        self
    }

    /// Runs `command` (program and arguments) last; its failure is ignored.
    pub fn command(&self, command: &[&str]) -> &Self {
        self.owned().commands.push(command.iter().map(|word| (*word).to_owned()).collect());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let owned = std::mem::take(&mut *self.owned());
        let labels: Vec<String> = owned.apps.iter().map(|app| format!("label=nap.app={app}")).collect();
        // Containers first: they hold their images.
        let mut containers = owned.containers;
        for label in &labels {
            containers.extend(docker_lines(&["ps", "-a", "--format", "{{.Names}}", "--filter", label]));
        }
        if !containers.is_empty() {
            quietly(Command::new("docker").args(["rm", "-f"]).args(containers));
        }
        // Images the test named itself (built here, or committed from a
        // container), with their untagged parents. First, while the app images
        // a snapshot was committed from still have their tags and so stop that.
        let references: Vec<String> = owned.images.iter().map(|reference| format!("reference={reference}")).collect();
        rmi(&["-f"], image_names(&references));
        // An app's images go by name, never by ID (an ID may carry another
        // test's tags too), and with --no-prune: the untagged layers under
        // them are the build cache that pushes beside this test may be using.
        rmi(&["-f", "--no-prune"], image_names(&labels));
        // What is left of them is untagged, so no test's name: the build's own
        // LABEL steps, whose config names the app. Newest (children) first.
        let mut leftovers = Vec::new();
        for label in &labels {
            leftovers.extend(docker_lines(&["images", "-a", "-q", "--filter", "dangling=true", "--filter", label]));
        }
        rmi(&["--no-prune"], leftovers);
        let endpoint = etcd_endpoint();
        let etcdctl = |args: &[&str]| {
            quietly(Command::new("etcdctl").env("ETCDCTL_API", "3").args(["--endpoints", &endpoint]).args(args));
        };
        for prefix in &owned.etcd_prefixes {
            etcdctl(&["del", "--prefix", prefix]);
        }
        for key in &owned.etcd_keys {
            etcdctl(&["del", key]);
        }
        for command in owned.commands {
            if let Some((program, args)) = command.split_first() {
                quietly(Command::new(program).args(args));
            }
        }
    }
}

/// `REPOSITORY:TAG` of each tagged image that one of `filters` lists.
fn image_names(filters: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for filter in filters {
        let listed = docker_lines(&["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", filter]);
        names.extend(listed.into_iter().filter(|name| !name.ends_with(":<none>")));
    }
    names
}

/// `docker rmi OPTIONS IMAGES`, if there are any.
fn rmi(options: &[&str], images: impl IntoIterator<Item = String>) {
    let images: Vec<String> = images.into_iter().collect();
    if !images.is_empty() {
        quietly(Command::new("docker").arg("rmi").args(options).args(images));
    }
}

/// The lines `docker ARGS` prints; none if it fails.
fn docker_lines(args: &[&str]) -> Vec<String> {
    let listed = Command::new("docker").args(args).stdin(Stdio::null()).stderr(Stdio::null()).output();
    let listed = listed.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default();
    listed.lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

/// Runs a command for its effect only. A guard must not panic: it may run
/// while a failed assert unwinds, and a second panic aborts.
fn quietly(command: &mut Command) {
    let _ = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}
