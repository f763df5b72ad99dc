//! Each app's own network, `nap-APP`: its instances and one-offs join it,
//! reach each other there and nothing of another app's, while nap's router
//! reaches every one of them. [`of_app`] makes it exist on the runner
//! before anything of the app starts (a release, its release phase, `ps
//! scale`, `run`).
//!
//! Where the runner's containers run on this host's Docker, nap gives the
//! network its subnet: the first free one of `app_subnets`
//! (`app_subnet_prefix` bits each), claimed in the store, so every host
//! gives the app the same one and a snapshot keeps its IP on another host.
//! A subnet that a network on this host's Docker holds is passed over;
//! should Docker still refuse one (another nap on the same daemon, with a
//! store of its own, took it meanwhile), the claim goes and the next free
//! one is claimed. A swarm and a cluster address their own networks.

use ipnet::Ipv4Net;
use nap_runner::{AppNetwork, RunError, Runner};
use tracing::{info, warn};

use crate::context::Context;
use crate::settings::SettingsError;

/// How many subnets one app may be refused on this host before nap gives up.
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no subnet of app_subnets {pool} (/{prefix} each) is free for {app}'s network; widen app_subnets")]
    PoolFull { app: String, pool: Ipv4Net, prefix: u8 },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] nap_state::StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// `app`'s own network, made on `runner` if need be.
pub async fn of_app(ctx: &Context, runner: &Runner, app: &str) -> Result<AppNetwork, NetworkError> {
    if !runner.assigns_subnets() {
        let network = AppNetwork::of_app(app, None);
        runner.ensure_network(&network).await?;
        return Ok(network);
    }
    let mut refused: Vec<Ipv4Net> = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let subnet = match ctx.store.app_subnet(app).await? {
            Some(subnet) => subnet,
            None => claim(ctx, runner, app, &refused).await?,
        };
        let network = AppNetwork::of_app(app, Some(subnet.clone()));
        match runner.ensure_network(&network).await {
            Ok(()) => return Ok(network),
            Err(RunError::SubnetTaken { .. }) if attempt < ATTEMPTS => {
                warn!(%app, %subnet, "a network on this host holds the app's subnet; claiming another");
                ctx.store.release_subnet(app, &subnet).await?;
                refused.extend(subnet.parse::<Ipv4Net>().ok());
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Claims the first subnet of the pool that no app holds, that overlaps no
/// network on this host, the shared one included, and that was not
/// `refused`; answers the app's subnet (another flow of the same app may
/// have claimed one first).
async fn claim(ctx: &Context, runner: &Runner, app: &str, refused: &[Ipv4Net]) -> Result<String, NetworkError> {
    let (pool, prefix) = ctx.settings.app_subnets()?;
    let claimed: Vec<Ipv4Net> =
        ctx.store.subnet_claims().await?.iter().filter_map(|(subnet, _)| subnet.parse().ok()).collect();
    let mut taken = runner.subnets_in_use().await?;
    taken.extend(ctx.settings.network().net());
    taken.extend_from_slice(refused);
    let subnets = pool.subnets(prefix).map_err(|_| SettingsError::AppSubnetPrefix { pool, prefix })?;
    for candidate in subnets {
        if claimed.contains(&candidate) || taken.iter().any(|held| overlap(*held, candidate)) {
            continue;
        }
        let subnet = candidate.to_string();
        if ctx.store.claim_subnet(app, &subnet).await? {
            let first = ctx.store.app_subnet(app).await?.unwrap_or_else(|| subnet.clone());
            if first != subnet {
                // Another flow of the app claimed one too: the first stays.
                ctx.store.release_subnet(app, &subnet).await?;
            }
            info!(%app, subnet = %first, "the app's network has its subnet");
            return Ok(first);
        }
    }
    Err(NetworkError::PoolFull { app: app.to_owned(), pool, prefix })
}

/// Whether two subnets share an address.
fn overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Removes `app`'s network from `runner` once nothing of it runs (`apps
/// destroy`, or a refused first push); its subnet claim goes with the
/// app's state. A failure is logged: the app is gone anyway.
pub async fn remove(runner: &Runner, app: &str) {
    let network = AppNetwork::of_app(app, None);
    if let Err(err) = runner.remove_network(&network).await {
        warn!(%app, network = %network.name, error = %err, "could not remove the app's network");
    }
}

#[cfg(test)]
mod tests {
    use super::overlap;

    #[test]
    fn subnets_overlap_when_one_holds_the_others_first_address() {
        let net = |text: &str| text.parse().expect("a subnet");
        assert!(overlap(net("10.112.0.0/24"), net("10.112.0.0/24")));
        assert!(overlap(net("10.112.0.0/12"), net("10.113.4.0/24")));
        assert!(overlap(net("10.113.4.0/24"), net("10.112.0.0/12")));
        assert!(!overlap(net("10.112.0.0/24"), net("10.112.1.0/24")));
        assert!(!overlap(net("172.31.0.0/16"), net("10.112.0.0/12")));
    }
}
