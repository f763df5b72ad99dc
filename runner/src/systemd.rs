//! The systemd runner: each release is a unit, `nap-APP@N.service`, rendered
//! from `units/app.service.tera` and driven over D-Bus. The unit runs the
//! release's container with the Docker CLI, so `systemctl status`,
//! `systemctl restart` and reboots work as an admin expects, while `ps` and
//! `logs` still read the container.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{info, warn};
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::check::until_answering;
use crate::docker::DockerRunner;
use crate::error::{RunError, SystemdError};
use crate::release::{InstanceId, Progress, RunRequest, Running};
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
        check_timeout: Duration,
    ) -> Result<Self, SystemdError> {
        let units = Units::load(settings.template_dir.as_deref())?;
        let manager = ManagerProxy::new(&bus).await?;
        // systemd only sends JobRemoved to subscribed clients.
        manager.subscribe().await?;
        Ok(SystemdRunner { manager, docker, settings, units, check_timeout })
    }

    pub fn docker(&self) -> &DockerRunner {
        &self.docker
    }

    fn unit_path(&self, app: &str, id: &InstanceId) -> PathBuf {
        self.settings.unit_dir.join(id.unit(app))
    }

    fn env_path(&self, app: &str, id: &InstanceId) -> PathBuf {
        self.settings.env_dir.join(format!("{}.env", id.container(app).trim_start_matches("nap-")))
    }

    /// Renders the instance's unit; its container holds `ip` on its app's
    /// network for life.
    pub fn render_unit(&self, req: &RunRequest<'_>, ip: std::net::Ipv4Addr) -> Result<String, SystemdError> {
        let mut context = tera::Context::new();
        context.insert("app", req.app);
        context.insert("release", &req.id.release);
        context.insert("restarts", &req.id.restarts);
        context.insert("image", req.image);
        context.insert("container", &req.id.container(req.app));
        context.insert("port", &req.port);
        context.insert("process", req.id.process.as_str());
        context.insert("hostname", &req.id.name().replace('.', "-"));
        let command: Vec<String> = req.command.iter().flatten().map(|word| exec_word(word)).collect();
        context.insert("command", &command);
        let mut labels: Vec<String> = req.labels().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        context.insert("labels", &labels);
        context.insert("env_file", &self.env_path(req.app, &req.id).display().to_string());
        context.insert("docker", &self.settings.docker_cli);
        context.insert("network", &req.network.name);
        context.insert("ip", &ip.to_string());
        context.insert("limits", &req.limits.docker_flags());
        Ok(self.units.render(units::SYSTEMD_SERVICE, &context)?)
    }

    /// Writes, enables and starts the instance's unit, then waits until the
    /// app answers on its network. On failure the unit is stopped and
    /// removed again.
    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        let unit = req.id.unit(req.app);
        let container = req.id.container(req.app);
        self.docker.ensure_network(req.network).await?;
        self.docker.remove(&container).await?;
        let mut env = BTreeMap::new();
        if req.id.process.is_web() {
            env.insert("PORT".to_owned(), req.port.to_string());
        }
        env.extend(req.env.iter().cloned());
        let env_text = env.iter().fold(String::new(), |mut text, (k, v)| {
            let _ = writeln!(text, "{k}={v}");
            text
        });
        // The environment may hold secrets; the unit does not.
        write_file(&self.env_path(req.app, &req.id), &env_text, 0o600)?;
        let ip = self.docker.free_address(req.network).await?;
        write_file(&self.unit_path(req.app, &req.id), &self.render_unit(req, ip)?, 0o644)?;
        progress(&format!("Starting {unit}"));
        let started = async {
            self.manager.reload().await.map_err(SystemdError::from)?;
            self.manager.enable_unit_files(vec![unit.clone()], false, true).await.map_err(SystemdError::from)?;
            self.run_job(&unit, |m, u| Box::pin(m.start_unit(u, "replace".into()))).await?;
            if !req.id.process.is_web() {
                return self.docker.wait_until_settled(&container, &req.network.name, progress).await;
            }
            let address = match req.check {
                Some(_) => self.docker.wait_until_ready(req, &container, progress).await?,
                None => self.wait_until_answering(&unit, &container, req.port, progress).await?,
            };
            Ok(Running::container(container.clone(), address))
        }
        .await;
        match started {
            Ok(running) => {
                info!(%unit, url = %running.url, "instance ready");
                Ok(running)
            }
            Err(err) => {
                if let Err(cleanup) = self.remove_instance(req.app, &req.id).await {
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
        progress: Progress<'_>,
    ) -> Result<std::net::SocketAddr, RunError> {
        progress(&format!("Waiting for {unit} to answer HTTP on port {port}"));
        let probe = || async {
            let state = self.unit_state(unit).await;
            if state.starts_with("failed") || state.contains("auto-restart") || state.starts_with("inactive") {
                return Err(RunError::UnitFailed {
                    unit: unit.to_owned(),
                    state,
                    log_tail: self.docker.log_tail(container).await,
                });
            }
            match self.docker.address(container, port).await {
                // The container ended before systemd saw it: say the unit's
                // state once systemd has (within a couple of seconds).
                Err(RunError::Exited { log_tail, .. }) => {
                    let mut state = self.unit_state(unit).await;
                    for _ in 0..20 {
                        if !state.starts_with("active") {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        state = self.unit_state(unit).await;
                    }
                    Err(RunError::UnitFailed { unit: unit.to_owned(), state, log_tail })
                }
                other => other,
            }
        };
        match until_answering(self.check_timeout, probe).await? {
            Some(address) => Ok(address),
            None => Err(RunError::CheckTimeout {
                container: unit.to_owned(),
                port,
                seconds: self.check_timeout.as_secs(),
                log_tail: self.docker.log_tail(container).await,
                listening: self.docker.listening_ports(container).await,
            }),
        }
    }

    /// Stops, disables and removes the units of every instance of `app` but
    /// `keep`, and their containers.
    pub async fn retire_all_but(&self, app: &str, keep: &[InstanceId]) -> Result<Vec<String>, RunError> {
        let mut retired = Vec::new();
        for id in self.instances_on_disk(app)? {
            if !keep.contains(&id) {
                self.remove_instance(app, &id).await?;
                retired.push(id.unit(app));
            }
        }
        // Containers of releases whose unit is already gone.
        retired.extend(self.docker.retire_all_but(app, keep).await?);
        Ok(retired)
    }

    /// The instances of the app's unit files.
    fn instances_on_disk(&self, app: &str) -> Result<Vec<InstanceId>, RunError> {
        let prefix = format!("nap-{app}@");
        let entries = match std::fs::read_dir(&self.settings.unit_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SystemdError::Write { path: self.settings.unit_dir.display().to_string(), source }.into());
            }
        };
        let mut instances: Vec<InstanceId> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| InstanceId::parse_suffix(name.strip_prefix(&prefix)?.strip_suffix(".service")?))
            .collect();
        instances.sort_unstable();
        Ok(instances)
    }

    pub(crate) async fn remove_instance(&self, app: &str, id: &InstanceId) -> Result<(), RunError> {
        let unit = id.unit(app);
        if let Err(err) = self.run_job(&unit, |m, u| Box::pin(m.stop_unit(u, "replace".into()))).await {
            warn!(%unit, error = %err, "stopping the unit failed; removing it anyway");
        }
        let _ = self.manager.disable_unit_files(vec![unit.clone()], false).await;
        let _ = self.manager.reset_failed_unit(unit.clone()).await;
        for path in [self.unit_path(app, id), self.env_path(app, id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SystemdError::Write { path: path.display().to_string(), source }.into()),
            }
        }
        self.manager.reload().await.map_err(SystemdError::from)?;
        self.docker.remove(&id.container(app)).await
    }
}

/// One word of a command as systemd's `ExecStart=` reads it: quoted, with
/// its specifiers (`%`) and variables (`$`) kept literal.
fn exec_word(word: &str) -> String {
    let mut quoted = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
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
