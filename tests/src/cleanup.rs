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
    /// Apps whose subnet claims (`/nap/subnets/*` naming them) go from the
    /// shared etcd.
    subnet_claims: BTreeSet<String>,
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

    /// Deletes the subnet claims of `app`'s network from the shared etcd:
    /// the keys under `/nap/subnets/` whose value names it.
    pub fn subnet_claims(&self, app: &str) -> &Self {
        self.owned().subnet_claims.insert(app.to_owned());
        self
    }

    /// Removes the containers nap ran for `app` (label `nap.app`), its
    /// network (`nap-APP`) and the images it built for it.
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
        let one_offs = owned.apps.iter().map(|app| format!("label=nap.one-off={app}"));
        for label in labels.iter().cloned().chain(one_offs) {
            containers.extend(docker_lines(&["ps", "-a", "--format", "{{.Names}}", "--filter", &label]));
        }
        if !containers.is_empty() {
            quietly(Command::new("docker").args(["rm", "-f"]).args(containers));
        }
        // Then each app's own network, which they were on.
        let networks: Vec<String> = owned.apps.iter().map(|app| format!("nap-{app}")).collect();
        if !networks.is_empty() {
            quietly(Command::new("docker").args(["network", "rm"]).args(networks));
        }
        // Never delete an image while a build may read its siblings: a
        // classic build looks for its cache among the children of its last
        // step, and fails ("unable to find image") if one goes meanwhile.
        // Hence names, not IDs (an ID may carry another test's tags too), and
        // --no-prune: the untagged images under an app's image (its build
        // steps, the last of them naming the app) are children of steps that
        // every push of the same Dockerfile shares.
        let references: Vec<String> = owned.images.iter().map(|reference| format!("reference={reference}")).collect();
        let mut ancestors = Vec::new();
        for reference in &references {
            for id in docker_lines(&["images", "-q", "--filter", reference]) {
                ancestors.extend(untagged_ancestors(&id));
            }
        }
        rmi(&["-f", "--no-prune"], image_names(&references));
        // The build steps of an image the test built itself go too, but for
        // the first one on a tagged image: builds from that image read it.
        rmi(&["--no-prune"], ancestors);
        rmi(&["-f", "--no-prune"], image_names(&labels));
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
        if !owned.subnet_claims.is_empty() {
            let listed = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoint, "get", "--prefix", nap_state::layout::subnet_claims().as_str()])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output();
            let listed = listed.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default();
            let lines: Vec<&str> = listed.lines().collect();
            for pair in lines.chunks(2) {
                if let [key, app] = pair
                    && owned.subnet_claims.contains(*app)
                {
                    etcdctl(&["del", key]);
                }
            }
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

/// The untagged images under `image`, nearest first, down to the first one
/// with a tag, without the one on that.
fn untagged_ancestors(image: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut next = parent_and_tagged(image).map(|(parent, _)| parent);
    while let Some(id) = next.filter(|id| !id.is_empty()) {
        let Some((parent, tagged)) = parent_and_tagged(&id) else { break };
        if tagged {
            break;
        }
        chain.push(id);
        next = Some(parent);
    }
    chain.pop();
    chain
}

/// An image's parent (empty for none), and whether it has a tag.
fn parent_and_tagged(image: &str) -> Option<(String, bool)> {
    let inspected = docker_lines(&["image", "inspect", "--format", "{{.Parent}} {{len .RepoTags}}", image]);
    let (parent, tags) = inspected.first()?.split_once(' ')?;
    Some((parent.to_owned(), tags != "0"))
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
