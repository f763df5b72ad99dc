//! Networks on this host's Docker. Each app runs on a bridge network of its
//! own, `nap-APP` ([`AppNetwork::of_app`]): its instances and one-offs reach
//! each other there, and nothing of another app's, because Docker isolates
//! bridge networks from each other (its `DOCKER-ISOLATION` rules); the host,
//! where nap's router runs, reaches every one of them. A container of
//! several apps (a service linked to them) joins each one's network
//! ([`DockerRunner::attach`]).
//!
//! An app's subnet is the same on every host (the gateway claims it from
//! `app_subnets` in the store), so a snapshot can be restored on another
//! host with the IP it had. Each instance gets its address when it is
//! created and keeps it for life: through Docker's restarts,
//! `systemctl restart` and reboots, the routes that name it stay true.
//!
//! Installations from before app networks ran every app on one shared
//! network (`network`, default `nap`); their instances stay there until
//! their app's next release, found by the missing [`labels::NETWORK`], and
//! the shared network goes once nothing is left on it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig};
use bollard::models::{NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig};
use bollard::models::{RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectNetworkOptions, ListNetworksOptions};
use ipnet::Ipv4Net;

use super::DockerRunner;
use crate::error::RunError;
use crate::labels;
use crate::network::{AppNetwork, SHARED};

/// What only Docker's networks need of an app's network.
impl AppNetwork {
    /// Whether a network Docker has (`found`) has this one's subnet (any,
    /// where this one leaves it to Docker).
    fn has_subnet(&self, found: &bollard::models::NetworkInspect) -> bool {
        let Some(subnet) = &self.subnet else { return true };
        let configs = found.ipam.as_ref().and_then(|ipam| ipam.config.as_ref());
        configs.is_some_and(|configs| configs.iter().any(|config| config.subnet.as_ref() == Some(subnet)))
    }

    /// The networking of a container that holds `ip` on this network.
    pub(crate) fn at(&self, ip: Ipv4Addr) -> NetworkingConfig {
        NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                self.name.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
                    ..Default::default()
                },
            )])),
        }
    }
}

/// A random host address of `net`: neither the network's own address, nor
/// its first (Docker's gateway), nor the broadcast address.
fn random_host(net: Ipv4Net) -> Option<Ipv4Addr> {
    let base = u32::from(net.network());
    let hosts = (!u32::from(net.netmask())).checked_sub(2).filter(|n| *n > 0)?;
    Some(Ipv4Addr::from(base + 2 + rand::random_range(0..hosts)))
}

/// Whether Docker refused a network because its subnet overlaps one it has.
fn is_overlap(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { message, .. } if message.contains("overlaps"))
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerRunner {
    /// Creates `network` unless it exists. Refuses a network of that name
    /// that is not it, and says when Docker refuses the subnet because
    /// another network here holds part of it ([`RunError::SubnetTaken`]).
    pub async fn ensure_network(&self, network: &AppNetwork) -> Result<(), RunError> {
        match self.docker.inspect_network(&network.name, None::<InspectNetworkOptions>).await {
            Ok(found) if !network.owns(found.labels.as_ref()) => {
                return Err(RunError::NetworkNotOurs { network: network.name.clone() });
            }
            // Left from an earlier life of the app (destroyed elsewhere,
            // its subnet claimed anew): made again, once nothing is on it.
            Ok(found) if network.app.is_some() && !network.has_subnet(&found) => {
                if found.containers.as_ref().is_some_and(|held| !held.is_empty()) {
                    return Err(RunError::NetworkOtherSubnet { network: network.name.clone() });
                }
                self.remove_network(&network.name).await?;
            }
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(err.into()),
        }
        let Some(subnet) = network.subnet.clone() else {
            return Err(RunError::NoSubnet { network: network.name.clone() });
        };
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig { subnet: Some(subnet.clone()), ..Default::default() }]),
                ..Default::default()
            }),
            labels: Some(network.labels()),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            // 409: another nap process made it meanwhile.
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(err) if is_overlap(&err) => Err(RunError::SubnetTaken { network: network.name.clone(), subnet }),
            Err(err) => Err(err.into()),
        }
    }

    /// The IPv4 subnets of every network on this host's Docker: an app's
    /// may not overlap any of them.
    pub async fn subnets_in_use(&self) -> Result<Vec<Ipv4Net>, RunError> {
        let networks = self.docker.list_networks(None::<ListNetworksOptions>).await?;
        Ok(networks
            .into_iter()
            .filter_map(|network| network.ipam?.config)
            .flatten()
            .filter_map(|config| config.subnet?.parse::<Ipv4Net>().ok())
            .collect())
    }

    /// Removes network `name` if it exists. Docker refuses while a
    /// container is still on it.
    pub async fn remove_network(&self, name: &str) -> Result<(), RunError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes the shared network of installations from before app
    /// networks once no container is left on it (the last app moved to its
    /// own at its release). Left alone while anything is on it, or when nap
    /// did not make it.
    pub async fn remove_shared_network_if_empty(&self) {
        let name = &self.shared.name;
        let Ok(found) = self.docker.inspect_network(name, None::<InspectNetworkOptions>).await else { return };
        let ours = found.labels.unwrap_or_default().get(labels::NETWORK).map(String::as_str) == Some(SHARED);
        if !ours || !found.containers.unwrap_or_default().is_empty() {
            return;
        }
        match self.remove_network(name).await {
            Ok(()) => tracing::info!(network = %name, "removed the shared network: every app runs on its own"),
            // A restore may have joined it meanwhile.
            Err(err) => tracing::debug!(network = %name, error = %err, "the shared network stays"),
        }
    }

    /// Joins running container `container` to `network` (made if need be),
    /// at an address Docker picks: a container that serves several apps
    /// (a service linked to each) is on each one's network.
    pub async fn attach(&self, container: &str, network: &AppNetwork) -> Result<(), RunError> {
        self.ensure_network(network).await?;
        let request = NetworkConnectRequest { container: container.to_owned(), endpoint_config: None };
        match self.docker.connect_network(&network.name, request).await {
            Ok(()) => Ok(()),
            // Already on it.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 403, message, .. })
                if message.contains("already exists") =>
            {
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// An address on `network` that no container holds now, for a new
    /// instance: from the subnet Docker has for it on this host. Two hosts'
    /// or processes' picks may still meet; Docker then refuses the second,
    /// and its start picks again.
    pub async fn free_address(&self, network: &AppNetwork) -> Result<Ipv4Addr, RunError> {
        const TRIES: usize = 64;
        let found = self.docker.inspect_network(&network.name, None::<InspectNetworkOptions>).await?;
        let net = found
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .find_map(|config| config.subnet?.parse::<Ipv4Net>().ok())
            .map(|net| net.trunc())
            .or_else(|| network.net());
        let held: Vec<Ipv4Addr> = found
            .containers
            .unwrap_or_default()
            .into_values()
            .filter_map(|endpoint| endpoint.ipv4_address?.split('/').next()?.parse().ok())
            .collect();
        (0..TRIES)
            .filter_map(|_| random_host(net?))
            .find(|ip| !held.contains(ip))
            .ok_or_else(|| RunError::NetworkFull { network: network.name.clone() })
    }

    /// The container on `network` that has `ip`, if any.
    pub async fn holder_of(&self, ip: Ipv4Addr, network: &AppNetwork) -> Result<Option<String>, RunError> {
        let found = self.docker.inspect_network(&network.name, None::<InspectNetworkOptions>).await?;
        Ok(found.containers.unwrap_or_default().into_values().find_map(|endpoint| {
            let address = endpoint.ipv4_address?;
            let address = address.split('/').next()?.parse::<Ipv4Addr>().ok()?;
            (address == ip).then(|| endpoint.name.unwrap_or_else(|| "a container".into()))
        }))
    }

    /// Starts `image` as container `name` on `network` with address `ip`.
    /// Refuses an address outside the subnet or already in use.
    pub async fn run_at(
        &self,
        name: &str,
        image: &str,
        ip: Ipv4Addr,
        mut labels: HashMap<String, String>,
        network: &AppNetwork,
    ) -> Result<(), RunError> {
        self.ensure_network(network).await?;
        if !network.contains(ip) {
            return Err(RunError::AddressOutside {
                ip,
                network: network.name.clone(),
                subnet: network.subnet.clone().unwrap_or_default(),
            });
        }
        if let Some(holder) = self.holder_of(ip, network).await? {
            return Err(RunError::AddressTaken { ip, holder });
        }
        labels.insert(labels::NETWORK.to_owned(), network.name.clone());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network.name.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(network.at(ip)),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.docker.create_container(Some(options), body).await?;
        if let Err(err) =
            self.docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await
        {
            let _ = self.remove(name).await;
            return Err(err.into());
        }
        Ok(())
    }

    /// The network container `name` runs on, as this host's Docker has it
    /// (its subnet, and the app whose it is); `None` when the container or
    /// its network is gone.
    pub async fn network_of_container(&self, name: &str) -> Result<Option<AppNetwork>, RunError> {
        let inspect =
            match self.docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await
            {
                Ok(inspect) => inspect,
                Err(err) if is_not_found(&err) => return Ok(None),
                Err(err) => return Err(err.into()),
            };
        let container_labels = inspect.config.and_then(|config| config.labels).unwrap_or_default();
        let name = self.network_of(&container_labels).to_owned();
        let found = match self.docker.inspect_network(&name, None::<InspectNetworkOptions>).await {
            Ok(found) => found,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let subnet = found
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .find_map(|config| config.subnet.filter(|subnet| subnet.parse::<Ipv4Net>().is_ok()));
        let app = found.labels.unwrap_or_default().remove(labels::APP);
        Ok(Some(AppNetwork { name, subnet, app }))
    }

    /// The network a container of nap's runs on, by its labels: the one
    /// [`labels::NETWORK`] names, else (an instance from before app
    /// networks) the shared one.
    pub(crate) fn network_of<'a, S: std::hash::BuildHasher>(
        &'a self,
        container_labels: &'a HashMap<String, String, S>,
    ) -> &'a str {
        container_labels.get(labels::NETWORK).map_or(self.shared.name.as_str(), String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::{AppNetwork, random_host};

    #[test]
    fn subnet_membership() {
        let network = AppNetwork::default();
        let net = network.net().expect("a subnet");
        assert!(network.contains("172.31.4.5".parse().unwrap()));
        assert!(!network.contains("172.17.0.2".parse().unwrap()));
        for _ in 0..1000 {
            let ip = random_host(net).expect("a host address");
            assert!(network.contains(ip));
            assert!(![[172, 31, 0, 0], [172, 31, 0, 1], [172, 31, 255, 255]].contains(&ip.octets()), "{ip}");
        }
        let tiny = AppNetwork::of_app("a", Some("10.0.0.0/30".into()));
        assert_eq!(random_host(tiny.net().unwrap()), Some("10.0.0.2".parse().unwrap()));
        assert!(!AppNetwork::of_app("a", None).contains("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn an_app_network_is_named_for_its_app_and_owned_by_it_alone() {
        let network = AppNetwork::of_app("shop", Some("10.112.3.0/24".into()));
        assert_eq!(network.name, "nap-shop");
        assert!(network.owns(Some(&network.labels())));
        let shared_overlay = [("nap.network".to_owned(), "swarm".to_owned())].into();
        assert!(
            !AppNetwork::of_app("swarm", None).owns(Some(&shared_overlay)),
            "the swarm's shared overlay is no app's"
        );
        assert!(!network.owns(Some(&AppNetwork::of_app("other", None).labels())));
        assert!(!network.owns(None));
    }
}
