//! `commit [APP]`: snapshot this host's containers into images that can move
//! to another host and keep their IP, and `takeover APP`: the
//! `ReplicationControllers` that run those snapshots.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;
use futures_util::future::join_all;
use nap_builder::Builder;
use nap_runner::manifest;
use nap_runner::units::{self, Units};
use nap_runner::{AppNetwork, DockerRunner};
use nap_state::LockSubject;
use nap_state::layout::commiter;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

use super::{CommandError, Reply, with_reporter};
use crate::caller::Caller;
use crate::context::{Context, Io};

/// One (app, component) this host must snapshot, from `import`.
#[derive(Debug, Clone)]
struct Wanted {
    app: String,
    component: String,
    state: u8,
    repository: String,
}

/// A running container that matches a [`Wanted`].
#[derive(Debug, Clone)]
struct Found {
    wanted: Wanted,
    container: String,
    ip: String,
    /// The network its IP is on, for one of nap's own containers (its
    /// app's); `None` for the original tool's.
    network: Option<AppNetwork>,
}

impl Found {
    /// `REPOSITORY/APP-COMPONENT-CONTAINERIP:TAG`, the original tool's name.
    fn image(&self, tag: &str) -> String {
        let Wanted { app, component, repository, .. } = &self.wanted;
        format!("{repository}/{app}-{component}-{}:{tag}", self.ip)
    }
}

/// Why `commit`, `takeover` or `restore` cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot tell this host's IP; set host_ip in nap.toml")]
    NoHostIp,
    #[error("nothing to snapshot on {0}: import the app's components for this IP first")]
    NothingHere(String),
    #[error("{failed} of {total} snapshot(s) failed; see above")]
    Failed { failed: usize, total: usize },
    #[error("take-over template of {app}: {source}")]
    Template {
        app: String,
        #[source]
        source: units::UnitError,
    },
    #[error(transparent)]
    Manifest(manifest::ManifestError),
    #[error("rendering the take-over RC of {app} stopped: {source}")]
    Rendering {
        app: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("no take-over manifests for {0}; run `commit {0}` first")]
    NoTakeovers(String),
    #[error("no IP recorded for {image} under {ours} or {}; was it made by commit?", commiter::ASSIGNER_IPS)]
    NoRecordedIp { image: String, ours: String },
    #[error("{key} holds {value:?}, which is not an IPv4 address")]
    NotAnIp { key: String, value: String },
    #[error("could not find an unused snapshot tag in {0} draws")]
    NoFreeTag(usize),
    #[error("{image} kept {subnet}, the subnet of app {app}'s network, but app {holder} holds it now")]
    SubnetTaken { image: String, subnet: String, app: String, holder: String },
}

/// How many tags `commit` draws before it gives up finding an unused one.
const TAG_DRAWS: usize = 8;

pub async fn commit(ctx: &Context, caller: &Caller, only: Option<&str>, io: &mut Io) -> Result<Reply, CommandError> {
    caller.check_admin("snapshot containers")?;
    let root = &ctx.settings.commiter_root();
    let host_ip = ctx.settings.host_ip().ok_or(SnapshotError::NoHostIp)?;
    let wanted: Vec<Wanted> =
        wanted_here(ctx, root, &host_ip).await?.into_iter().filter(|w| only.is_none_or(|app| w.app == app)).collect();
    if wanted.is_empty() {
        return Err(SnapshotError::NothingHere(host_ip).into());
    }
    let _lock = ctx.lock(LockSubject::Snapshot { host_ip: &host_ip }, "commit", caller.name()).await?;
    let docker = ctx.docker().await?;
    let runner = ctx.docker_runner().await?;
    // State 0: found, but not to be snapshotted.
    let (skipped, to_snapshot): (Vec<Found>, Vec<Found>) =
        find_containers(&runner, &docker, &wanted).await?.into_iter().partition(|f| f.wanted.state == 0);
    let tag = unused_tag(ctx, &docker, &to_snapshot).await?;
    let builder = Builder::new(docker, ctx.settings.registry());
    let (builder, tag, host_ip_ref, to_snapshot_ref) = (&builder, &tag, &host_ip, &to_snapshot);
    let outcomes = with_reporter(io, |report| async move {
        let report = &report;
        let snapshots = to_snapshot_ref.iter().map(|found| async move {
            let outcome = snapshot(ctx, builder, found, tag, host_ip_ref, &|line| report.detail(line)).await;
            match &outcome {
                Ok(image) => report.step(&format!("{} ({}) -> {image}", found.container, found.ip)),
                Err(err) => report.problem(&format!("{} ({}): {err}", found.container, found.ip)),
            }
            (found, outcome)
        });
        join_all(snapshots).await
    })
    .await;
    let mut rows = Vec::new();
    let mut failed = 0;
    for (found, outcome) in &outcomes {
        let (image, error) = match outcome {
            Ok(image) => (Some(image.clone()), None),
            Err(err) => {
                failed += 1;
                (None, Some(err.to_string()))
            }
        };
        rows.push(json!({
            "app": found.wanted.app, "component": found.wanted.component, "container": found.container,
            "ip": found.ip, "image": image, "pushed": found.wanted.state == 1 && error.is_none(), "error": error,
        }));
    }
    if failed > 0 {
        return Err(SnapshotError::Failed { failed, total: outcomes.len() }.into());
    }
    Ok(Reply::new(
        format!(
            "snapshotted {} container(s) on {host_ip} as tag {tag} ({} skipped: state 0)",
            outcomes.len(),
            skipped.len()
        ),
        json!(rows),
    ))
}

/// Snapshots one container: commit, push when asked, then record the image's
/// IP, its network and its take-over RC together, so the keys never
/// half-change.
async fn snapshot(
    ctx: &Context,
    builder: &Builder,
    found: &Found,
    tag: &str,
    host_ip: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<String, CommandError> {
    let root = &ctx.settings.commiter_root();
    let Wanted { app, component, state, .. } = &found.wanted;
    let image = found.image(tag);
    builder.commit(&found.container, &image).await.map_err(CommandError::Build)?;
    if *state == 1 {
        builder.push(&image, progress).await.map_err(CommandError::Build)?;
    }
    let takeover = Takeover {
        app: app.clone(),
        component: component.clone(),
        ip: found.ip.clone(),
        image: image.clone(),
        node: ctx.settings.node_name.clone().unwrap_or_else(|| host_ip.to_owned()),
    };
    let units_dir = ctx.settings.units_dir.clone();
    // Templates are files and tera is CPU: off the runtime's threads.
    let manifest = tokio::task::spawn_blocking(move || takeover.render(units_dir.as_deref()))
        .await
        .map_err(|source| SnapshotError::Rendering { app: app.clone(), source })??;
    let mut records = vec![
        (commiter::image_ip(root, &image), found.ip.clone().into_bytes()),
        (commiter::takeover(root, app, component, &found.ip), manifest.into_bytes()),
    ];
    if let Some(network) = &found.network {
        let json = serde_json::to_vec(network).map_err(nap_state::StoreError::Encode)?;
        records.push((commiter::image_network(root, &image), json));
    }
    ctx.store.put_many(&records).await?;
    Ok(image)
}

/// What a take-over RC is rendered from.
struct Takeover {
    app: String,
    component: String,
    ip: String,
    image: String,
    /// The node it is pinned to.
    node: String,
}

impl Takeover {
    /// Renders the take-over RC from the admin's template (`units_dir`),
    /// else the built-in one; never from anything an app's pusher controls.
    fn render(&self, units_dir: Option<&std::path::Path>) -> Result<String, SnapshotError> {
        let Takeover { app, component, ip, image, node } = self;
        let err = |source| SnapshotError::Template { app: app.clone(), source };
        let units = Units::load(units_dir).map_err(err)?;
        let mut context = tera::Context::new();
        context.insert("app", app);
        context.insert("component", component);
        context.insert("ip", ip);
        context.insert("image", image);
        context.insert("node", node);
        let manifest = units.render(units::TAKEOVER_RC, &context).map_err(err)?;
        // A template that Kubernetes would refuse is refused now, not at take-over time.
        manifest::parse(&manifest, &format!("take-over RC of {app}/{component}")).map_err(SnapshotError::Manifest)?;
        Ok(manifest)
    }
}

pub async fn takeover(ctx: &Context, caller: &Caller, app: &str) -> Result<Reply, CommandError> {
    caller.check_admin("read take-over manifests")?;
    let prefix = commiter::takeovers(&ctx.settings.commiter_root(), app);
    let manifests: Vec<String> =
        ctx.store.list(&prefix).await?.into_iter().map(|(_, v)| String::from_utf8_lossy(&v).into_owned()).collect();
    if manifests.is_empty() {
        return Err(SnapshotError::NoTakeovers(app.to_owned()).into());
    }
    Ok(Reply::new(manifests.join("---\n"), json!(manifests)))
}

pub async fn restore(
    ctx: &Context,
    caller: &Caller,
    image: &str,
    name: Option<&str>,
    io: &mut Io,
) -> Result<Reply, CommandError> {
    caller.check_admin("restore snapshots")?;
    let root = &ctx.settings.commiter_root();
    let mut recorded = None;
    for key in [commiter::image_ip(root, image), commiter::assigner_ip(image)] {
        if let Some(value) = ctx.store.get(&key).await? {
            recorded = Some((key, String::from_utf8_lossy(&value).trim().to_owned()));
            break;
        }
    }
    let Some((key, ip)) = recorded else {
        return Err(SnapshotError::NoRecordedIp { image: image.to_owned(), ours: commiter::image_ips(root) }.into());
    };
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| SnapshotError::NotAnIp { key, value: ip.clone() })?;
    let network = network_of_snapshot(ctx, root, image, ip).await?;
    let repo = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
    let default_name = format!("nap-restored-{}", repo.rsplit('/').next().unwrap_or(repo));
    let name = name.unwrap_or(&default_name).to_owned();
    let docker = ctx.docker().await?;
    let builder = Builder::new(docker, ctx.settings.registry());
    // Snapshots are containers on this host, whatever runs the releases.
    let runner = ctx.docker_runner().await?;
    let (container, network) = (name.as_str(), &network);
    with_reporter(io, |report| async move {
        report.step(&format!("Pulling {image}"));
        builder.pull(image, &|line| report.detail(line)).await.map_err(CommandError::Build)?;
        report.step(&format!("Starting {container} at {ip}"));
        let labels = HashMap::from([("nap.restored-from".to_owned(), image.to_owned())]);
        runner.run_at(container, image, ip, labels, network).await?;
        Ok::<_, CommandError>(())
    })
    .await?;
    Ok(Reply::new(
        format!("restored {image} as {name} at {ip}"),
        json!({ "image": image, "container": name, "ip": ip.to_string() }),
    ))
}

/// The network a snapshot goes back to: its app's, as `commit` recorded it
/// (the app's subnet claimed again, should the app be gone), when that
/// holds `ip`; else the shared network, where every app ran before each
/// had its own (and where the original tool's addresses go).
async fn network_of_snapshot(
    ctx: &Context,
    root: &str,
    image: &str,
    ip: std::net::Ipv4Addr,
) -> Result<AppNetwork, CommandError> {
    let recorded: Option<AppNetwork> = ctx.store.get_json(&commiter::image_network(root, image)).await?;
    let Some(network) = recorded.filter(|network| network.contains(ip)) else { return Ok(ctx.settings.network()) };
    if let (Some(app), Some(subnet)) = (&network.app, &network.subnet)
        && ctx.store.app_subnet(app).await?.is_none()
        && !ctx.store.claim_subnet(app, subnet).await?
    {
        let holder = ctx.store.subnet_claims().await?.into_iter().find(|(claimed, _)| claimed == subnet);
        return Err(SnapshotError::SubnetTaken {
            image: image.to_owned(),
            subnet: subnet.clone(),
            app: app.clone(),
            holder: holder.map(|(_, holder)| holder).unwrap_or_default(),
        }
        .into());
    }
    Ok(network)
}

async fn wanted_here(ctx: &Context, root: &str, host_ip: &str) -> Result<Vec<Wanted>, CommandError> {
    let prefix = commiter::host_components(root, host_ip);
    let mut by_component: HashMap<(String, String), (Option<u8>, Option<String>)> = HashMap::new();
    for (key, value) in ctx.store.list(&prefix).await? {
        let parts: Vec<&str> = key[prefix.len()..].split('/').collect();
        let [app, component, field] = parts[..] else { continue };
        let entry = by_component.entry((app.to_owned(), component.to_owned())).or_default();
        let value = String::from_utf8_lossy(&value).trim().to_owned();
        match field {
            commiter::STATE => entry.0 = value.parse().ok(),
            commiter::REPOSITORY => entry.1 = Some(value),
            _ => {}
        }
    }
    let mut wanted: Vec<Wanted> = by_component
        .into_iter()
        .filter_map(|((app, component), (state, repository))| {
            Some(Wanted { app, component, state: state?, repository: repository? })
        })
        .collect();
    wanted.sort_by(|a, b| (&a.app, &a.component).cmp(&(&b.app, &b.component)));
    Ok(wanted)
}

/// Running containers for each wanted (app, component): nap's own release
/// containers by label (with their network), and the original tool's names
/// containing `APPrc-COMPONENT`.
async fn find_containers(
    runner: &DockerRunner,
    docker: &bollard::Docker,
    wanted: &[Wanted],
) -> Result<Vec<Found>, CommandError> {
    let options = ListContainersOptionsBuilder::new().all(false).build();
    let containers = docker.list_containers(Some(options)).await.map_err(nap_runner::RunError::from)?;
    let mut found = Vec::new();
    for want in wanted {
        let convention = format!("{}rc-{}", want.app, want.component);
        for container in &containers {
            let name = container.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_owned());
            let Some(name) = name else { continue };
            let labels = container.labels.clone().unwrap_or_default();
            let ours = labels.get(nap_runner::labels::APP).is_some_and(|app| *app == want.app);
            if !(ours || name.contains(&convention)) {
                continue;
            }
            let network = if ours { runner.network_of_container(&name).await? } else { None };
            let networks = container.network_settings.as_ref().and_then(|n| n.networks.as_ref());
            // Its address on its app's network, else on its only one.
            let ip = networks.and_then(|networks| match &network {
                Some(network) => networks.get(&network.name)?.ip_address.clone().filter(|ip| !ip.is_empty()),
                None => networks.values().find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty())),
            });
            if let Some(ip) = ip {
                found.push(Found { wanted: want.clone(), container: name, ip, network });
            }
        }
    }
    Ok(found)
}

/// A tag that none of these containers' snapshots has: the second, and a
/// random suffix for two in one second, drawn again while an image of it is
/// recorded in the store or on this host. Drawn under the host's snapshot
/// lock, so no other `commit` here can draw the same one meanwhile.
async fn unused_tag(ctx: &Context, docker: &bollard::Docker, to_snapshot: &[Found]) -> Result<String, CommandError> {
    let root = &ctx.settings.commiter_root();
    let format = format_description!("[year][month][day]-[hour][minute][second]");
    for _ in 0..TAG_DRAWS {
        let stamp = OffsetDateTime::now_utc().format(&format).unwrap_or_default();
        let tag = format!("{stamp}-{:04x}", rand::random::<u16>());
        let taken = to_snapshot.iter().map(|f| {
            let image = f.image(&tag);
            async move {
                let recorded = ctx.store.get(&commiter::image_ip(root, &image)).await?.is_some();
                Ok::<_, CommandError>(recorded || docker.inspect_image(&image).await.is_ok())
            }
        });
        let mut free = true;
        for taken in join_all(taken).await {
            free &= !taken?;
        }
        if free {
            return Ok(tag);
        }
    }
    Err(SnapshotError::NoFreeTag(TAG_DRAWS).into())
}
