//! What a runner is asked to run and answers: the types every runner shares,
//! and the names of what it runs.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::check::HealthCheck;
use crate::error::RunError;
use crate::labels;
use crate::limits::Limits;
use crate::network::AppNetwork;
use crate::process::ProcessType;

/// Where a runner reports progress: one line at a time, to the client.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// One instance of one release: instance `index` of process type
/// `process`, in start number `restarts` of the release. A deploy starts
/// release N as `restarts: 0`; each `restart` starts the same release
/// afresh as the next, beside the one serving, which is drained and retired
/// once the new one answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub release: u32,
    pub restarts: u32,
    pub process: ProcessType,
    /// From 1.
    pub index: u32,
}

impl InstanceId {
    /// Which instance a container's labels say it runs ([`labels`]).
    pub fn of_labels<S: std::hash::BuildHasher>(labels: &HashMap<String, String, S>) -> Option<InstanceId> {
        let release = labels.get(labels::RELEASE)?.parse().ok()?;
        let restarts = labels.get(labels::RESTARTS).map_or(Some(0), |r| r.parse().ok())?;
        let process = match labels.get(labels::PROCESS) {
            Some(kind) => ProcessType::parse(kind).ok()?,
            None => ProcessType::web(),
        };
        let index = labels.get(labels::INDEX).map_or(Some(1), |i| i.parse().ok())?;
        Some(InstanceId { release, restarts, process, index })
    }

    /// The first `web` instance of start `restarts` of `release`.
    pub fn web(release: u32, restarts: u32) -> InstanceId {
        InstanceId { release, restarts, process: ProcessType::web(), index: 1 }
    }

    /// `web.1`: the instance within its release, as `ps` and logs name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.process, self.index)
    }

    /// The container that runs it: `nap-APP-vN-web.1`, then
    /// `nap-APP-vN.K-web.1` for the Kth restart of the release.
    pub fn container(&self, app: &str) -> String {
        format!("nap-{app}-v{}-{}", self.start(), self.name())
    }

    /// The systemd unit that runs it: `nap-APP@N.web.1.service`, then
    /// `nap-APP@N.K.web.1.service`.
    pub fn unit(&self, app: &str) -> String {
        format!("nap-{app}@{}.{}.service", self.start(), self.name())
    }

    /// Reads a unit's instance name back: `N.TYPE.I` or `N.K.TYPE.I` (and
    /// the `N` or `N.K` of units from before process types, as `web.1`).
    pub fn parse_suffix(text: &str) -> Option<InstanceId> {
        let parts: Vec<&str> = text.split('.').collect();
        let number = |text: &str| text.parse::<u32>().ok();
        let (release, restarts, process, index) = match parts.as_slice() {
            [release] => (number(release)?, 0, ProcessType::web(), 1),
            [release, restarts] => (number(release)?, number(restarts)?, ProcessType::web(), 1),
            [release, kind, index] => (number(release)?, 0, ProcessType::parse(kind).ok()?, number(index)?),
            [release, restarts, kind, index] => {
                (number(release)?, number(restarts)?, ProcessType::parse(kind).ok()?, number(index)?)
            }
            _ => return None,
        };
        Some(InstanceId { release, restarts, process, index })
    }

    /// `N`, or `N.K` after K restarts.
    fn start(&self) -> String {
        match self.restarts {
            0 => self.release.to_string(),
            restarts => format!("{}.{restarts}", self.release),
        }
    }

    /// Whether it belongs to the same start of the same release as `other`.
    pub fn same_start(&self, other: &InstanceId) -> bool {
        (self.release, self.restarts) == (other.release, other.restarts)
    }
}

/// What to run: one instance of a release of an app.
pub struct RunRequest<'a> {
    pub app: &'a str,
    pub id: InstanceId,
    pub image: &'a str,
    /// What it runs (the Procfile's words); `None`: the image's command.
    pub command: Option<Vec<String>>,
    /// The port a `web` instance listens on inside the container; it gets
    /// it as `PORT`. Other types get no port.
    pub port: u16,
    /// When a `web` instance is ready (app.json); `None`: when it answers
    /// HTTP on `PORT` at all.
    pub check: Option<&'a HealthCheck>,
    /// Environment besides `PORT`.
    pub env: &'a [(String, String)],
    /// What the instance may use.
    pub limits: Limits,
    /// Where it may run: swarm placement constraints (other runners run
    /// on their one host or cluster, and ignore them).
    pub placement: &'a [String],
    /// The app's own network, which it joins.
    pub network: &'a AppNetwork,
}

impl RunRequest<'_> {
    /// The labels of the container that runs it ([`labels`]).
    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (labels::APP.to_owned(), self.app.to_owned()),
            (labels::RELEASE.to_owned(), self.id.release.to_string()),
            (labels::RESTARTS.to_owned(), self.id.restarts.to_string()),
            (labels::PROCESS.to_owned(), self.id.process.to_string()),
            (labels::INDEX.to_owned(), self.id.index.to_string()),
            (labels::NETWORK.to_owned(), self.network.name.clone()),
        ]);
        if self.id.process.is_web() {
            labels.insert(labels::PORT.to_owned(), self.port.to_string());
        }
        labels
    }
}

/// How a one-off ended: its exit code, or `None` when it did not end by
/// itself (it took over its time, or its client went first).
pub type Ended = Result<Option<i64>, RunError>;

/// What a one-off container (or, on Kubernetes, pod) runs: the release
/// phase, or `run`.
pub struct OneOff<'a> {
    pub app: &'a str,
    pub release: u32,
    pub image: &'a str,
    /// The words it runs; never through a shell.
    pub command: &'a [String],
    pub env: &'a [(String, String)],
    pub limits: Limits,
    /// `release`, or `run.N`: its name is `nap-APP-vN-WHAT`.
    pub what: String,
    /// A terminal of this many columns and rows, or plain streams.
    pub tty: Option<(u16, u16)>,
    /// Whether input goes to it.
    pub stdin: bool,
    /// The app's own network, which it joins.
    pub network: &'a AppNetwork,
}

/// A release that answers.
#[derive(Debug, Clone)]
pub struct Running {
    /// What runs it: the container (docker and systemd runners; a unit
    /// runs its release's container) or the workload (Kubernetes).
    pub name: String,
    /// Where a router reaches it: the container's address on its app's
    /// network, or the cluster Service's host.
    pub host: String,
    pub port: u16,
    pub url: String,
}

impl Running {
    /// A container answering at `address` on its app's network.
    pub(crate) fn container(name: String, address: SocketAddr) -> Running {
        Running { name, host: address.ip().to_string(), port: address.port(), url: format!("http://{address}/") }
    }

    /// A container of a type that takes no traffic, running at `ip`.
    pub(crate) fn unrouted(name: String, ip: std::net::IpAddr) -> Running {
        Running { name, host: ip.to_string(), port: 0, url: String::new() }
    }
}

/// One running (or stopped) release of an app, as `ps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    /// The container, or the pod on Kubernetes.
    pub name: String,
    pub release: u32,
    /// Which start of the release it is (see [`InstanceId`]).
    pub restarts: u32,
    /// Its process type.
    pub process: ProcessType,
    /// Its number within its type, from 1.
    pub index: u32,
    /// How many times it crashed and was started again in place.
    pub crashes: u32,
    /// Docker's state: running, restarting, exited, ...
    pub state: String,
    /// When the container last started (RFC 3339), if it runs.
    pub started_at: Option<String>,
    /// `IP:PORT` on its app's network, while it runs (docker and systemd runners).
    pub address: Option<String>,
}

impl Instance {
    pub fn id(&self) -> InstanceId {
        InstanceId { release: self.release, restarts: self.restarts, process: self.process.clone(), index: self.index }
    }
}

/// A release that serves, as `restart` finds it.
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    pub app: &'a str,
    pub release: u32,
}

#[cfg(test)]
mod tests {
    use super::{InstanceId, ProcessType};

    #[test]
    fn names_of_an_instance() {
        let first = InstanceId::web(7, 0);
        let again = InstanceId { index: 3, ..InstanceId::web(7, 2) };
        let worker = InstanceId { process: ProcessType::parse("worker").unwrap(), ..InstanceId::web(7, 0) };
        assert_eq!(first.container("hello"), "nap-hello-v7-web.1");
        assert_eq!(again.container("hello"), "nap-hello-v7.2-web.3");
        assert_eq!(worker.container("hello"), "nap-hello-v7-worker.1");
        assert_eq!(first.unit("hello"), "nap-hello@7.web.1.service");
        assert_eq!(again.unit("hello"), "nap-hello@7.2.web.3.service");
        for id in [&first, &again, &worker] {
            let suffix = id.unit("a").trim_start_matches("nap-a@").trim_end_matches(".service").to_owned();
            assert_eq!(InstanceId::parse_suffix(&suffix).as_ref(), Some(id));
        }
        assert_eq!(InstanceId::parse_suffix("7"), Some(first), "a unit from before process types");
        assert_eq!(InstanceId::parse_suffix("7.2"), Some(InstanceId::web(7, 2)));
        assert_eq!(InstanceId::parse_suffix("7.x"), None);
        assert_eq!(InstanceId::parse_suffix("7.Web.1"), None);
    }
}
