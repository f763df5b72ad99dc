//! What a runner is asked to run and answers: the types every runner shares,
//! and the names of what it runs.

use std::net::SocketAddr;

use crate::limits::Limits;

/// Where a runner reports progress: one line at a time, to the client.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// One start of one release. A deploy starts release N as `restarts: 0`;
/// each `restart` starts the same release afresh as the next, beside the
/// one serving, which is drained and retired once the new one answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceId {
    pub release: u32,
    pub restarts: u32,
}

impl InstanceId {
    /// The container that runs it: `nap-APP-vN`, then `nap-APP-vN.K` for
    /// its Kth restart.
    pub fn container(self, app: &str) -> String {
        format!("nap-{app}-v{}", self.suffix())
    }

    /// The systemd unit that runs it: `nap-APP@N.service`, then
    /// `nap-APP@N.K.service`.
    pub fn unit(self, app: &str) -> String {
        format!("nap-{app}@{}.service", self.suffix())
    }

    /// Reads the `N` or `N.K` of a unit's instance name back.
    pub fn parse_suffix(text: &str) -> Option<InstanceId> {
        let (release, restarts) = match text.split_once('.') {
            Some((release, restarts)) => (release.parse().ok()?, restarts.parse().ok()?),
            None => (text.parse().ok()?, 0),
        };
        Some(InstanceId { release, restarts })
    }

    fn suffix(self) -> String {
        match self.restarts {
            0 => self.release.to_string(),
            restarts => format!("{}.{restarts}", self.release),
        }
    }
}

/// What to run: one release of an app.
pub struct RunRequest<'a> {
    pub app: &'a str,
    pub id: InstanceId,
    pub image: &'a str,
    /// The port the app listens on inside the container; it gets it as `PORT`.
    pub port: u16,
    /// Environment besides `PORT`.
    pub env: &'a [(String, String)],
    /// What the instance may use.
    pub limits: Limits,
}

/// A release that answers.
#[derive(Debug, Clone)]
pub struct Running {
    /// What runs it: the container (docker and systemd runners; a unit
    /// runs its release's container) or the workload (Kubernetes).
    pub name: String,
    /// Where a router reaches it: the container's address on nap's network,
    /// or the cluster Service's host.
    pub host: String,
    pub port: u16,
    pub url: String,
}

impl Running {
    /// A container answering at `address` on nap's network.
    pub(crate) fn container(name: String, address: SocketAddr) -> Running {
        Running { name, host: address.ip().to_string(), port: address.port(), url: format!("http://{address}/") }
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
    /// Docker's state: running, restarting, exited, ...
    pub state: String,
    /// When the container last started (RFC 3339), if it runs.
    pub started_at: Option<String>,
    /// `IP:PORT` on nap's network, while it runs (docker and systemd runners).
    pub address: Option<String>,
}

impl Instance {
    pub fn id(&self) -> InstanceId {
        InstanceId { release: self.release, restarts: self.restarts }
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
    use super::InstanceId;

    #[test]
    fn names_of_an_instance() {
        let first = InstanceId { release: 7, restarts: 0 };
        let again = InstanceId { release: 7, restarts: 2 };
        assert_eq!(first.container("hello"), "nap-hello-v7");
        assert_eq!(again.container("hello"), "nap-hello-v7.2");
        assert_eq!(first.unit("hello"), "nap-hello@7.service");
        assert_eq!(again.unit("hello"), "nap-hello@7.2.service");
        assert_eq!(InstanceId::parse_suffix("7.2"), Some(again));
        assert_eq!(InstanceId::parse_suffix("7"), Some(first));
        assert_eq!(InstanceId::parse_suffix("7.x"), None);
    }
}
