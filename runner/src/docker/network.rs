//! nap's Docker network: every release runs on it, so a container's IP comes
//! from one subnet that every host defines alike, and a snapshot can be
//! restored on another host with the IP it had.
//!
//! Each instance gets its address when it is created and keeps it for life:
//! through Docker's restarts, `systemctl restart` and reboots, the routes
//! that name it stay true.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig};
use bollard::models::{NetworkCreateRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use super::DockerRunner;
use crate::error::RunError;

/// The network's name and subnet (`ADDRESS/BITS`).
#[derive(Debug, Clone)]
pub struct AppNetwork {
    pub name: String,
    pub subnet: String,
}

impl Default for AppNetwork {
    fn default() -> Self {
        AppNetwork { name: "nap".into(), subnet: "172.31.0.0/16".into() }
    }
}

impl AppNetwork {
    /// The subnet's base address and mask.
    fn parts(&self) -> Option<(u32, u32)> {
        let (base, bits) = self.subnet.split_once('/')?;
        let (base, bits) = (base.parse::<Ipv4Addr>().ok()?, bits.parse::<u32>().ok()?);
        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits.min(32)) };
        Some((u32::from(base) & mask, mask))
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.parts().is_some_and(|(base, mask)| u32::from(ip) & mask == base)
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

    /// A random host address of the subnet: neither the network's own
    /// address, nor its first (Docker's gateway), nor the broadcast address.
    fn random_host(&self) -> Option<Ipv4Addr> {
        let (base, mask) = self.parts()?;
        let hosts = (!mask).checked_sub(2).filter(|n| *n > 0)?;
        Some(Ipv4Addr::from(base + 2 + rand::random_range(0..hosts)))
    }
}

impl DockerRunner {
    /// Creates the network unless it exists.
    pub async fn ensure_network(&self) -> Result<(), RunError> {
        let network = self.network();
        match self.docker.inspect_network(&network.name, None::<bollard::query_parameters::InspectNetworkOptions>).await
        {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig { subnet: Some(network.subnet.clone()), ..Default::default() }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([("nap.network".to_owned(), "apps".to_owned())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            // 409: another nap process made it meanwhile.
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// An address on nap's network that no container holds now, for a new
    /// instance. Two hosts' or processes' picks may still meet; Docker then
    /// refuses the second, and its start picks again.
    pub async fn free_address(&self) -> Result<Ipv4Addr, RunError> {
        const TRIES: usize = 64;
        let network = self
            .docker
            .inspect_network(&self.network().name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await?;
        let held: Vec<Ipv4Addr> = network
            .containers
            .unwrap_or_default()
            .into_values()
            .filter_map(|endpoint| endpoint.ipv4_address?.split('/').next()?.parse().ok())
            .collect();
        (0..TRIES)
            .filter_map(|_| self.network().random_host())
            .find(|ip| !held.contains(ip))
            .ok_or_else(|| RunError::NetworkFull { network: self.network().name.clone() })
    }

    /// The container on nap's network that has `ip`, if any.
    pub async fn holder_of(&self, ip: Ipv4Addr) -> Result<Option<String>, RunError> {
        let network = self
            .docker
            .inspect_network(&self.network().name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await?;
        Ok(network.containers.unwrap_or_default().into_values().find_map(|endpoint| {
            let address = endpoint.ipv4_address?;
            let address = address.split('/').next()?.parse::<Ipv4Addr>().ok()?;
            (address == ip).then(|| endpoint.name.unwrap_or_else(|| "a container".into()))
        }))
    }

    /// Starts `image` as container `name` on nap's network with address `ip`.
    /// Refuses an address outside the subnet or already in use.
    pub async fn run_at(
        &self,
        name: &str,
        image: &str,
        ip: Ipv4Addr,
        labels: HashMap<String, String>,
    ) -> Result<(), RunError> {
        self.ensure_network().await?;
        let network = self.network().clone();
        if !network.contains(ip) {
            return Err(RunError::AddressOutside { ip, network: network.name, subnet: network.subnet });
        }
        if let Some(holder) = self.holder_of(ip).await? {
            return Err(RunError::AddressTaken { ip, holder });
        }
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
}

#[cfg(test)]
mod tests {
    use super::AppNetwork;

    #[test]
    fn subnet_membership() {
        let network = AppNetwork { name: "nap".into(), subnet: "172.31.0.0/16".into() };
        assert!(network.contains("172.31.4.5".parse().unwrap()));
        assert!(!network.contains("172.17.0.2".parse().unwrap()));
        for _ in 0..1000 {
            let ip = network.random_host().expect("a host address");
            assert!(network.contains(ip));
            assert!(![[172, 31, 0, 0], [172, 31, 0, 1], [172, 31, 255, 255]].contains(&ip.octets()), "{ip}");
        }
        let tiny = AppNetwork { name: "nap".into(), subnet: "10.0.0.0/30".into() };
        assert_eq!(tiny.random_host(), Some("10.0.0.2".parse().unwrap()));
    }
}
