//! What a runner is asked to run and answers: the types every runner shares.

/// Where a runner reports progress: one line at a time, to the client.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What to run: one release of an app.
pub struct RunRequest<'a> {
    pub app: &'a str,
    pub release: u32,
    pub image: &'a str,
    /// The port the app listens on inside the container; it gets it as `PORT`.
    pub port: u16,
    /// Environment besides `PORT`.
    pub env: &'a [(String, String)],
}

/// A release that answers.
#[derive(Debug, Clone)]
pub struct Running {
    /// What runs it: the container (docker and systemd runners; a unit
    /// runs its release's container) or the workload (Kubernetes).
    pub name: String,
    pub host_port: u16,
    pub url: String,
}

/// One running (or stopped) release of an app, as `ps` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    /// The container, or the pod on Kubernetes.
    pub name: String,
    pub release: u32,
    /// Docker's state: running, restarting, exited, ...
    pub state: String,
    /// When the container last started (RFC 3339), if it runs.
    pub started_at: Option<String>,
    pub host_port: Option<u16>,
}

/// A release that serves, as `restart` finds it.
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    pub app: &'a str,
    pub release: u32,
    /// The port the app listens on inside the container.
    pub port: u16,
    /// The host port it is published on (docker and systemd runners).
    pub host_port: u16,
}
