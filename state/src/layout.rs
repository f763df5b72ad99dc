//! The key layout: every key nap writes is named here and nowhere else.
//! `docs/state.md` describes the same layout for operators.

/// Root of everything nap owns in the store.
pub const ROOT: &str = "/nap";

/// `/nap/keys/NAME`: an SSH key allowed to reach the gateway.
pub fn ssh_key(name: &str) -> String {
    format!("{ROOT}/keys/{name}")
}

/// Prefix of all SSH keys.
pub fn ssh_keys() -> String {
    format!("{ROOT}/keys/")
}

/// Prefix of all apps.
pub fn apps() -> String {
    format!("{ROOT}/apps/")
}

/// `/nap/apps/APP/app`: the app's record; an app exists when this key does.
pub fn app_record(app: &str) -> String {
    format!("{ROOT}/apps/{app}/app")
}

/// The app whose [`app_record`] key this is.
pub fn parse_app_record(key: &str) -> Option<&str> {
    key.strip_prefix(ROOT)?.strip_prefix("/apps/")?.strip_suffix("/app").filter(|app| !app.contains('/'))
}

/// `/nap/apps/APP/config`: the app's environment, as a JSON object.
pub fn config(app: &str) -> String {
    format!("{ROOT}/apps/{app}/config")
}

/// `/nap/apps/APP/limits`: what the app's instances may use (`limits set`).
pub fn limits(app: &str) -> String {
    format!("{ROOT}/apps/{app}/limits")
}

/// `/nap/apps/APP/formation`: how many instances of each process type run
/// (`ps scale`), as `{"web": 2, "worker": 1}`.
pub fn formation(app: &str) -> String {
    format!("{ROOT}/apps/{app}/formation")
}

/// `/nap/apps/APP/placement`: where the swarm runner may place the app's
/// tasks (`placement APP`), as a JSON list of constraints.
pub fn placement(app: &str) -> String {
    format!("{ROOT}/apps/{app}/placement")
}

/// `/nap/apps/APP/crashes/`: how many times each instance of the app
/// stopped without nap asking, by container (`ps` shows it as RESTARTS).
pub fn crashes(app: &str) -> String {
    format!("{ROOT}/apps/{app}/crashes/")
}

/// `/nap/apps/APP/crashes/CONTAINER`.
pub fn crash_count(app: &str, container: &str) -> String {
    format!("{ROOT}/apps/{app}/crashes/{container}")
}

/// `/nap/apps/APP/healthcheck`: the check routers keep making of the app's
/// `web` instances (from its app.json), published with each release.
pub fn healthcheck(app: &str) -> String {
    format!("{ROOT}/apps/{app}/healthcheck")
}

/// The app whose health check `key` is.
pub fn parse_app_healthcheck(key: &str) -> Option<&str> {
    key.strip_prefix(ROOT)?.strip_prefix("/apps/")?.strip_suffix("/healthcheck").filter(|app| !app.contains('/'))
}

/// `/nap/apps/APP/`: everything about one app.
pub fn app(app: &str) -> String {
    format!("{ROOT}/apps/{app}/")
}

/// `/nap/apps/APP/images/TREE`: the ID of the image nap built for `app` from
/// the git tree `TREE`. A push of a tree built before reuses that image,
/// and only when this key names it: labels on an image prove nothing, since
/// any pusher can build an image with any labels.
pub fn tree_image(app: &str, tree: &str) -> String {
    format!("{ROOT}/apps/{app}/images/{tree}")
}

/// `/nap/apps/APP/releases/N`: one release, as JSON. N is zero-padded so that
/// a prefix listing returns releases in order.
pub fn release(app: &str, version: u32) -> String {
    format!("{ROOT}/apps/{app}/releases/{version:010}")
}

/// Prefix of an app's releases.
pub fn releases(app: &str) -> String {
    format!("{ROOT}/apps/{app}/releases/")
}

/// `/nap/apps/APP/current`: the release number that is serving.
pub fn current(app: &str) -> String {
    format!("{ROOT}/apps/{app}/current")
}

/// Prefix of the instances of `app` that serve now, one directory each:
/// `instances/ID/ip`, `instances/ID/port` and `instances/ID/release`, so
/// that template hooks (an nginx upstream) can route to them.
pub fn instances(app: &str) -> String {
    format!("{ROOT}/apps/{app}/instances/")
}

/// One field (`ip`, `port`, `release`) of instance `id` of `app`.
pub fn instance_field(app: &str, id: &str, field: &str) -> String {
    format!("{ROOT}/apps/{app}/instances/{id}/{field}")
}

/// `(app, id, field)` of a key [`instance_field`] made; `None` for any other key.
pub fn parse_instance_field(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix("/apps/")?;
    let (app, rest) = rest.split_once('/')?;
    let (id, field) = rest.strip_prefix("instances/")?.split_once('/')?;
    (!field.contains('/')).then_some((app, id, field))
}

/// `/nap/apps/APP/domains/HOST`: a host the app also answers at on the router.
pub fn app_domain(app: &str, host: &str) -> String {
    format!("{ROOT}/apps/{app}/domains/{host}")
}

/// Prefix of an app's own hosts.
pub fn app_domains(app: &str) -> String {
    format!("{ROOT}/apps/{app}/domains/")
}

/// `(app, host)` of a key [`app_domain`] made; `None` for any other key.
pub fn parse_app_domain(key: &str) -> Option<(&str, &str)> {
    let (app, rest) = key.strip_prefix(ROOT)?.strip_prefix("/apps/")?.split_once('/')?;
    let host = rest.strip_prefix("domains/")?;
    (!host.is_empty() && !host.contains('/')).then_some((app, host))
}

/// `/nap/apps/APP/certs/HOST`: the certificate the router serves for HOST
/// (a [`crate::Certificate`], chain and private key, as JSON).
pub fn app_cert(app: &str, host: &str) -> String {
    format!("{ROOT}/apps/{app}/certs/{host}")
}

/// Prefix of an app's certificates.
pub fn app_certs(app: &str) -> String {
    format!("{ROOT}/apps/{app}/certs/")
}

/// `(app, host)` of a key [`app_cert`] made; `None` for any other key.
pub fn parse_app_cert(key: &str) -> Option<(&str, &str)> {
    let (app, rest) = key.strip_prefix(ROOT)?.strip_prefix("/apps/")?.split_once('/')?;
    let host = rest.strip_prefix("certs/")?;
    (!host.is_empty() && !host.contains('/')).then_some((app, host))
}

/// `/nap/apps/APP/https`: `force` sends the app's plain-HTTP requests to
/// HTTPS (308) on hosts that have a certificate; absent, both are served.
pub fn app_https(app: &str) -> String {
    format!("{ROOT}/apps/{app}/https")
}

/// The app whose [`app_https`] key this is.
pub fn parse_app_https(key: &str) -> Option<&str> {
    key.strip_prefix(ROOT)?.strip_prefix("/apps/")?.strip_suffix("/https").filter(|app| !app.contains('/'))
}

/// `/nap/apps/APP/letsencrypt`: the app's ACME state (a
/// [`crate::AcmeState`]): on or off, and the last order's outcome.
pub fn app_letsencrypt(app: &str) -> String {
    format!("{ROOT}/apps/{app}/letsencrypt")
}

/// `/nap/acme/accounts/DIRECTORY`: the credentials (a private key) of
/// nap's account with that ACME directory.
pub fn acme_account(directory: &str) -> String {
    let name: String = directory.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{ROOT}/acme/accounts/{name}")
}

/// `/nap/acme/challenges/TOKEN`: the key authorization an HTTP-01
/// challenge expects at `/.well-known/acme-challenge/TOKEN`, so that any
/// router sharing the store can answer it.
pub fn acme_challenge(token: &str) -> String {
    format!("{ROOT}/acme/challenges/{token}")
}

/// `/nap/domains/HOST`: which app claimed a host (its name); one app per host.
pub fn domain_claim(host: &str) -> String {
    format!("{ROOT}/domains/{host}")
}

/// `/nap/subnets/ADDRESS-BITS`: the app whose own network holds that
/// subnet (its name); one app per subnet, claimed with a compare-and-swap.
pub fn subnet_claim(subnet: &str) -> String {
    format!("{ROOT}/subnets/{}", subnet.replace('/', "-"))
}

/// Prefix of every subnet claim.
pub fn subnet_claims() -> String {
    format!("{ROOT}/subnets/")
}

/// The subnet (`ADDRESS/BITS`) a key [`subnet_claim`] made is of.
pub fn parse_subnet_claim(key: &str) -> Option<String> {
    let name = key.strip_prefix(ROOT)?.strip_prefix("/subnets/")?;
    let (address, bits) = name.rsplit_once('-')?;
    (!address.is_empty() && !bits.is_empty() && !name.contains('/')).then(|| format!("{address}/{bits}"))
}

/// `/nap/routers/ID`: a live router (bound to its lease) and the upstreams
/// (`IP:PORT`) it still sends requests to: those it routes, and those with
/// requests in flight. The release flow retires a release once no router
/// lists its address.
pub fn router(id: &str) -> String {
    format!("{ROOT}/routers/{id}")
}

/// Prefix of every live router.
pub fn routers() -> String {
    format!("{ROOT}/routers/")
}

/// `/nap/locks/NAME`: a lock when the store is shared (etcd), bound to the
/// holder's lease: `APP` for an app's deploys, `snapshot@HOSTIP` for a
/// host's `commit`, `acme@APP` for an app's certificate orders (see
/// [`crate::LockSubject`]).
pub fn lock(name: &str) -> String {
    format!("{ROOT}/locks/{name}")
}

/// The commiter flow's keys, under a root that defaults to [`commiter::DEFAULT_ROOT`]
/// and can be changed, as the original tool's "etcd path" argument could.
pub mod commiter {
    pub const DEFAULT_ROOT: &str = "/commiter";

    /// `ROOT/config/NAME`: a cluster setting (`apiserver`, ...).
    pub fn config(root: &str, name: &str) -> String {
        format!("{root}/config/{name}")
    }

    /// `ROOT/images/IP/APP/COMPONENT/`: what to snapshot on host IP.
    pub fn component(root: &str, ip: &str, app: &str, component: &str) -> String {
        format!("{root}/images/{ip}/{app}/{component}/")
    }

    /// One field of a component to snapshot: [`STATE`] or [`REPOSITORY`].
    pub fn component_field(root: &str, ip: &str, app: &str, component: &str, field: &str) -> String {
        format!("{}{field}", self::component(root, ip, app, component))
    }

    /// The component's state: 0 do not commit, 1 commit and push, 2 commit only.
    pub const STATE: &str = "state";
    /// The registry its snapshots go to.
    pub const REPOSITORY: &str = "repository";

    /// Prefix of every component to snapshot on host IP.
    pub fn host_components(root: &str, ip: &str) -> String {
        format!("{root}/images/{ip}/")
    }

    /// `ROOT/takeover/APP/COMPONENT-IP`: the take-over ReplicationController
    /// of one snapshotted pod, as YAML.
    pub fn takeover(root: &str, app: &str, component: &str, ip: &str) -> String {
        format!("{root}/takeover/{app}/{component}-{ip}")
    }

    /// Prefix of an app's take-over manifests.
    pub fn takeovers(root: &str, app: &str) -> String {
        format!("{root}/takeover/{app}/")
    }

    /// `ROOT/ips/IMAGE`: the container IP a snapshot image must keep.
    pub fn image_ip(root: &str, image: &str) -> String {
        format!("{root}/ips/{image}")
    }

    /// Prefix of the snapshot images' IPs.
    pub fn image_ips(root: &str) -> String {
        format!("{root}/ips/")
    }

    /// `ROOT/networks/IMAGE`: the network a snapshot image's IP is on (its
    /// app's: name, subnet and app, as JSON), which `restore` joins.
    pub fn image_network(root: &str, image: &str) -> String {
        format!("{root}/networks/{image}")
    }

    /// `/assigner/ips/IMAGE`: where the original tool's IP assigner kept an
    /// image's IP; `restore` reads it when nap recorded none. Not nap's key,
    /// so it is outside the root.
    pub fn assigner_ip(image: &str) -> String {
        format!("{ASSIGNER_IPS}{image}")
    }

    /// Prefix of the IP assigner's keys.
    pub const ASSIGNER_IPS: &str = "/assigner/ips/";
}

/// The keys of the CI/CD write-up's deploy flow: CI (or nap) writes a
/// request, and template hooks on a deploy host turn it into `kubectl`.
/// They live outside nap's root because other tools write them too.
pub mod k8s_deploy {
    pub const ROOT: &str = "/k8s-deploy";

    /// Roll `PROJECT`'s app in environment `env` to a new image
    /// (a [`crate::Rollout`]).
    pub fn rollout(project: &str, env: &str) -> String {
        format!("{ROOT}/{project}/rollout/{env}")
    }

    /// Undo the last rollout of `PROJECT`'s app in environment `env`.
    pub fn undo(project: &str, env: &str) -> String {
        format!("{ROOT}/{project}/undo/{env}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_subnet_claim_key_reads_back_as_its_subnet() {
        let key = super::subnet_claim("10.112.3.0/24");
        assert_eq!(key, "/nap/subnets/10.112.3.0-24");
        assert_eq!(super::parse_subnet_claim(&key).as_deref(), Some("10.112.3.0/24"));
        assert_eq!(super::parse_subnet_claim("/nap/domains/x"), None);
    }

    #[test]
    fn an_instance_field_key_reads_back_as_what_made_it() {
        let key = super::instance_field("hello", "nap-hello-v3", "port");
        assert_eq!(super::parse_instance_field(&key), Some(("hello", "nap-hello-v3", "port")));
        for other in [super::config("hello"), super::current("hello"), "/nap/apps/hello/instances/x".into()] {
            assert_eq!(super::parse_instance_field(&other), None, "{other}");
        }
    }
}
