//! Docker labels nap puts on what it runs, so it can find its own
//! containers ([`crate::release::RunRequest::labels`] sets them,
//! [`crate::release::InstanceId::of_labels`] reads them back).

pub const APP: &str = "nap.app";
pub const RELEASE: &str = "nap.release";
/// Which start of the release (absent: the first).
pub const RESTARTS: &str = "nap.restarts";
/// Its process type (absent: `web`).
pub const PROCESS: &str = "nap.process";
/// Its number within its type (absent: 1).
pub const INDEX: &str = "nap.index";
/// The port a `web` instance listens on inside the container.
pub const PORT: &str = "nap.port";
/// On a container: the network it runs on, where its address is
/// (absent: the shared one, from before app networks). On a network:
/// whose it is, [`crate::network::OF_APP`] (with [`APP`]) or
/// [`crate::network::SHARED`]. On a Kubernetes pod: its app's
/// network, which the app's NetworkPolicy selects.
pub const NETWORK: &str = "nap.network";
