//! The systemd runner: each release is a unit, `nap-APP@N.service`, rendered
//! from `units/app.service.tera` and driven over D-Bus. The unit runs the
//! release's container with the Docker CLI, so `systemctl status`,
//! `systemctl restart` and reboots work as an admin expects, while `ps` and
//! `logs` still read the container.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{info, warn};
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::check::{free_host_port, until_answering};
use crate::docker::DockerRunner;
use crate::error::{RunError, SystemdError};
use crate::release::{Progress, RunRequest, Running, Serving};
use crate::units::{self, Units};

/// How long systemd gets to finish a start, stop or restart job.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the systemd runner puts things, and what its units call.
#[derive(Debug, Clone)]
pub struct SystemdSettings {
    /// D-Bus address of the system bus; `None` for the default.
    pub bus_address: Option<String>,
    /// Where unit files go (default `/etc/systemd/system`).
    pub unit_dir: PathBuf,
    /// Where each release's environment file goes; units read it from the
    /// same path, so it must be visible to systemd there.
    pub env_dir: PathBuf,
    /// A directory whose `app.service.tera` replaces the built-in template.
    pub template_dir: Option<PathBuf>,
    /// The Docker CLI the units run.
    pub docker_cli: String,
}

pub struct SystemdRunner {
    manager: ManagerProxy<'static>,
    docker: DockerRunner,
    settings: SystemdSettings,
    units: Units,
    public_host: String,
    check_timeout: Duration,
}

/// Connects to the system bus at `address` (or the default one).
pub async fn connect_bus(address: Option<&str>) -> Result<zbus::Connection, SystemdError> {
    let shown = address.unwrap_or("the default system bus").to_owned();
    let err = |source| SystemdError::Bus { address: shown.clone(), source };
    match address {
        Some(address) => zbus::connection::Builder::address(address).build().await.map_err(err),
        None => zbus::Connection::system().await.map_err(err),
    }
}

/// Whether systemd answers on this bus.
pub async fn systemd_on_bus(bus: &zbus::Connection) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(bus).await else { return false };
    match zbus::names::BusName::try_from("org.freedesktop.systemd1") {
        Ok(name) => dbus.name_has_owner(name).await.unwrap_or(false),
        Err(_) => false,
    }
}

impl SystemdRunner {
    pub async fn new(
        bus: zbus::Connection,
        docker: DockerRunner,
        settings: SystemdSettings,
        public_host: String,
        check_timeout: Duration,
    ) -> Result<Self, SystemdError> {
        let units = Units::load(settings.template_dir.as_deref())?;
        let manager = ManagerProxy::new(&bus).await?;
        // systemd only sends JobRemoved to subscribed clients.
        manager.subscribe().await?;
        Ok(SystemdRunner { manager, docker, settings, units, public_host, check_timeout })
    }

    pub fn unit_name(app: &str, release: u32) -> String {
        format!("nap-{app}@{release}.service")
    }

    pub fn docker(&self) -> &DockerRunner {
        &self.docker
    }

    fn unit_path(&self, app: &str, release: u32) -> PathBuf {
        self.settings.unit_dir.join(Self::unit_name(app, release))
    }

    fn env_path(&self, app: &str, release: u32) -> PathBuf {
        self.settings.env_dir.join(format!("{app}-v{release}.env"))
    }

    /// Renders the release's unit.
    pub fn render_unit(&self, req: &RunRequest<'_>, host_port: u16) -> Result<String, SystemdError> {
        let mut context = tera::Context::new();
        context.insert("app", req.app);
        context.insert("release", &req.release);
        context.insert("image", req.image);
        context.insert("container", &DockerRunner::container_name(req.app, req.release));
        context.insert("port", &req.port);
        context.insert("host_port", &host_port);
        context.insert("env_file", &self.env_path(req.app, req.release).display().to_string());
        context.insert("docker", &self.settings.docker_cli);
        context.insert("network", &self.docker.network().name);
        Ok(self.units.render(units::SYSTEMD_SERVICE, &context)?)
    }

    /// Writes, enables and starts the release's unit, then waits until the
    /// app answers. On failure the unit is stopped and removed again.
    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        let unit = Self::unit_name(req.app, req.release);
        let container = DockerRunner::container_name(req.app, req.release);
        self.docker.ensure_network().await?;
        self.docker.remove(&container).await?;
        let host_port = free_host_port()?;
        let mut env = BTreeMap::from([("PORT".to_owned(), req.port.to_string())]);
        env.extend(req.env.iter().cloned());
        let env_text = env.iter().fold(String::new(), |mut text, (k, v)| {
            let _ = writeln!(text, "{k}={v}");
            text
        });
        // The environment may hold secrets; the unit does not.
        write_file(&self.env_path(req.app, req.release), &env_text, 0o600)?;
        write_file(&self.unit_path(req.app, req.release), &self.render_unit(req, host_port)?, 0o644)?;
        progress(&format!("Starting {unit}"));
        let started = async {
            self.manager.reload().await.map_err(SystemdError::from)?;
            self.manager.enable_unit_files(vec![unit.clone()], false, true).await.map_err(SystemdError::from)?;
            self.run_job(&unit, |m, u| Box::pin(m.start_unit(u, "replace".into()))).await?;
            self.wait_until_answering(&unit, &container, req.port, host_port, progress).await
        }
        .await;
        match started {
            Ok(()) => {
                let url = format!("http://{}:{host_port}/", self.public_host);
                info!(%unit, %url, "release answering");
                Ok(Running { name: container, host_port, url })
            }
            Err(err) => {
                if let Err(cleanup) = self.remove_release(req.app, req.release).await {
                    warn!(%unit, error = %cleanup, "could not remove the failed release's unit");
                }
                Err(err)
            }
        }
    }

    /// Runs one job (start, stop, restart) and waits for systemd's verdict.
    async fn run_job<F>(&self, unit: &str, call: F) -> Result<(), RunError>
    where
        F: for<'a> FnOnce(
            &'a ManagerProxy<'static>,
            String,
        )
            -> std::pin::Pin<Box<dyn Future<Output = zbus::Result<zbus::OwnedObjectPath>> + Send + 'a>>,
    {
        // Listen before asking, so the verdict cannot slip by.
        let mut removed = self.manager.receive_job_removed().await.map_err(SystemdError::from)?;
        let job = call(&self.manager, unit.to_owned()).await.map_err(SystemdError::from)?;
        let verdict = tokio::time::timeout(JOB_TIMEOUT, async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job.as_str() == job.as_str() {
                    return Some(args.result.clone());
                }
            }
            None
        })
        .await;
        match verdict {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => {
                let state = self.unit_state(unit).await;
                Err(SystemdError::Job { unit: unit.to_owned(), result, state }.into())
            }
            Ok(None) | Err(_) => {
                Err(SystemdError::JobTimeout { unit: unit.to_owned(), seconds: JOB_TIMEOUT.as_secs() }.into())
            }
        }
    }

    /// `active (running)`, `failed (failed)`, ... as systemctl would say.
    pub async fn unit_state(&self, unit: &str) -> String {
        let state = async {
            let path = self.manager.get_unit(unit.to_owned()).await?;
            let proxy = UnitProxy::builder(self.manager.inner().connection()).path(path).build().await?;
            Ok::<_, zbus::Error>(format!("{} ({})", proxy.active_state().await?, proxy.sub_state().await?))
        };
        state.await.unwrap_or_else(|_| "not loaded".into())
    }

    async fn wait_until_answering(
        &self,
        unit: &str,
        container: &str,
        port: u16,
        host_port: u16,
        progress: Progress<'_>,
    ) -> Result<(), RunError> {
        progress(&format!("Waiting for {unit} to answer HTTP on port {port}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, host_port));
        let probe = || async {
            let state = self.unit_state(unit).await;
            if state.starts_with("failed") || state.contains("auto-restart") || state.starts_with("inactive") {
                return Err(RunError::UnitFailed {
                    unit: unit.to_owned(),
                    state,
                    log_tail: self.docker.log_tail(container).await,
                });
            }
            Ok(addr)
        };
        match until_answering(self.check_timeout, probe).await? {
            Some(_) => Ok(()),
            None => Err(RunError::CheckTimeout {
                container: unit.to_owned(),
                port,
                seconds: self.check_timeout.as_secs(),
                log_tail: self.docker.log_tail(container).await,
            }),
        }
    }

    /// Restarts the release's unit (as `systemctl restart` would) and waits
    /// until the app answers again.
    pub async fn restart(&self, serving: Serving<'_>, progress: Progress<'_>) -> Result<(), RunError> {
        let Serving { app, release, port, host_port } = serving;
        let unit = Self::unit_name(app, release);
        progress(&format!("Restarting {unit}"));
        self.run_job(&unit, |m, u| Box::pin(m.restart_unit(u, "replace".into()))).await?;
        let container = DockerRunner::container_name(app, release);
        self.wait_until_answering(&unit, &container, port, host_port, progress).await
    }

    /// Stops, disables and removes the units of every release of `app` but
    /// `keep`, and their containers.
    pub async fn retire_all_but(&self, app: &str, keep: Option<u32>) -> Result<Vec<String>, RunError> {
        let mut retired = Vec::new();
        for release in self.releases_on_disk(app)? {
            if Some(release) != keep {
                self.remove_release(app, release).await?;
                retired.push(Self::unit_name(app, release));
            }
        }
        // Containers of releases whose unit is already gone.
        retired.extend(self.docker.retire_all_but(app, keep).await?);
        Ok(retired)
    }

    /// Release numbers of the app's unit files.
    fn releases_on_disk(&self, app: &str) -> Result<Vec<u32>, RunError> {
        let prefix = format!("nap-{app}@");
        let entries = match std::fs::read_dir(&self.settings.unit_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SystemdError::Write { path: self.settings.unit_dir.display().to_string(), source }.into());
            }
        };
        let mut releases: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(".service")?.parse().ok())
            .collect();
        releases.sort_unstable();
        Ok(releases)
    }

    pub(crate) async fn remove_release(&self, app: &str, release: u32) -> Result<(), RunError> {
        let unit = Self::unit_name(app, release);
        if let Err(err) = self.run_job(&unit, |m, u| Box::pin(m.stop_unit(u, "replace".into()))).await {
            warn!(%unit, error = %err, "stopping the unit failed; removing it anyway");
        }
        let _ = self.manager.disable_unit_files(vec![unit.clone()], false).await;
        let _ = self.manager.reset_failed_unit(unit.clone()).await;
        for path in [self.unit_path(app, release), self.env_path(app, release)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SystemdError::Write { path: path.display().to_string(), source }.into()),
            }
        }
        self.manager.reload().await.map_err(SystemdError::from)?;
        self.docker.remove(&DockerRunner::container_name(app, release)).await
    }
}

/// Writes a file with `mode`, atomically: systemd never reads half a unit.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), RunError> {
    let err = |source| RunError::from(SystemdError::Write { path: path.display().to_string(), source });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let staged = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&staged, text).map_err(err)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&staged, path).map_err(err)
}
