//! An app's network as every runner knows it: its name (`nap-APP`), its
//! subnet where nap picks it, and whose it is. Each runner makes it its own
//! way: a bridge on this host's Docker ([`crate::docker::network`]), an
//! overlay on a swarm, a NetworkPolicy on Kubernetes.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::labels;

/// What a network's [`labels::NETWORK`] says it is: one app's.
pub const OF_APP: &str = "app";
/// ... or the one network every app shared before app networks.
pub const SHARED: &str = "apps";

/// A network releases run on: its name, its subnet (`ADDRESS/BITS`), and
/// the app it is of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppNetwork {
    pub name: String,
    /// `None`: whoever makes the network picks it (a swarm, a cluster).
    pub subnet: Option<String>,
    /// `None`: the network every app shared before app networks.
    pub app: Option<String>,
}

impl Default for AppNetwork {
    /// The shared network of installations from before app networks.
    fn default() -> Self {
        AppNetwork { name: "nap".into(), subnet: Some("172.31.0.0/16".into()), app: None }
    }
}

impl AppNetwork {
    /// `nap-APP`: the name of `app`'s own network on every runner.
    pub fn name_of(app: &str) -> String {
        format!("nap-{app}")
    }

    /// `app`'s own network, with `subnet` (or one its runner picks).
    pub fn of_app(app: &str, subnet: Option<String>) -> AppNetwork {
        AppNetwork { name: Self::name_of(app), subnet, app: Some(app.to_owned()) }
    }

    /// The subnet, parsed; `None` without one, or with one that is not IPv4.
    pub fn net(&self) -> Option<Ipv4Net> {
        self.subnet.as_deref()?.parse::<Ipv4Net>().ok().map(|net| net.trunc())
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net().is_some_and(|net| net.contains(&ip))
    }

    /// The labels Docker keeps on the network, which say whose it is.
    pub(crate) fn labels(&self) -> HashMap<String, String> {
        match &self.app {
            Some(app) => {
                HashMap::from([(labels::NETWORK.to_owned(), OF_APP.to_owned()), (labels::APP.to_owned(), app.clone())])
            }
            None => HashMap::from([(labels::NETWORK.to_owned(), SHARED.to_owned())]),
        }
    }

    /// Whether a network Docker has, with `found` labels, is this one, and
    /// not something else of the same name (an app called `swarm` and the
    /// swarm's shared overlay `nap-swarm`, or a network nap did not make).
    pub(crate) fn owns(&self, found: Option<&HashMap<String, String>>) -> bool {
        match &self.app {
            Some(app) => found.and_then(|labels| labels.get(labels::APP)) == Some(app),
            // The shared network may be one an operator made by hand.
            None => true,
        }
    }
}
