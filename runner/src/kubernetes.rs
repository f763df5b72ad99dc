//! The Kubernetes runner: a release becomes manifests rendered from the
//! templates in `units/` (a Deployment, or a `ReplicationController` per
//! release for older clusters, and a Service), checked against the
//! Kubernetes schema, applied with `kubectl apply` and waited for. A release
//! that does not become ready is undone, so the previous one keeps serving.
//! Each app's pods are on a network of the app's own: a NetworkPolicy
//! `nap-APP` that lets only the app's pods (and, on the web port its Service
//! publishes, anyone) reach them, applied with each release's manifests and
//! each one-off pod, checked with them.

pub(crate) mod kubectl;
pub mod manifest;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStateWaiting, Pod, ReplicationController, Service};
use tracing::{info, warn};

pub use kubectl::{Kubectl, KubectlError};

use crate::error::{KubernetesError, RunError, UnknownName};
use crate::labels;
use crate::network::AppNetwork;
use crate::release::{Ended, Instance, Progress, RunRequest, Running, Serving};
use crate::units::{self, Units};

const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The label of the pods of a process type besides web: the app they are
/// of. Not `nap.app`, so that the web workload's and the Service's
/// selectors never take them.
const PROCESS_OF: &str = "nap.process-of";

/// The app's config as a list of `{name, value}` (`env`) and its limits as
/// Kubernetes names them (`limits`), for a template.
fn insert_env_and_limits(context: &mut tera::Context, env: &[(String, String)], limits: crate::Limits) {
    let env: Vec<HashMap<&str, &str>> =
        env.iter().map(|(name, value)| HashMap::from([("name", name.as_str()), ("value", value.as_str())])).collect();
    context.insert("env", &env);
    let limits: BTreeMap<&str, String> = limits.kubernetes().into_iter().collect();
    context.insert("limits", &limits);
}

/// `deployment/APP-TYPE`: what runs process type TYPE of an app, besides web.
fn process_workload(app: &str, kind: &str) -> String {
    format!("deployment/{app}-{kind}")
}
/// Lines of the failed pods' output shown with a failed rollout.
const LOG_TAIL: &str = "15";

/// What each release is applied as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum WorkloadKind {
    /// One Deployment per app, rolled to each release.
    #[default]
    #[serde(rename = "deployment")]
    Deployment,
    /// One ReplicationController per release, for clusters without apps/v1.
    #[serde(rename = "rc", alias = "replicationcontroller")]
    ReplicationController,
}

impl std::str::FromStr for WorkloadKind {
    type Err = UnknownName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        UnknownName::parse(text, "Kubernetes kind", "deployment or rc")
    }
}

/// Which cluster, and how releases look there.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// The kubectl program [default: `kubectl` on PATH].
    pub kubectl: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub kind: WorkloadKind,
    /// The Service's type [default: NodePort, so the app has a URL].
    pub service_type: String,
    pub replicas: u32,
    /// How long a rollout may take before it is undone.
    pub rollout_timeout: Duration,
    /// A directory whose templates replace the built-in ones.
    pub units_dir: Option<PathBuf>,
    /// The cluster's pod network (`k8s_pod_cidr`): the web port of an app's
    /// pods is open to every address but these, so that another app's
    /// pods reach it only through the Service's node port, as outside
    /// clients do. `None`: open to every address, pods included.
    pub pod_cidr: Option<String>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            kubectl: "kubectl".into(),
            kubeconfig: None,
            context: None,
            namespace: None,
            kind: WorkloadKind::Deployment,
            service_type: "NodePort".into(),
            replicas: 1,
            rollout_timeout: Duration::from_secs(300),
            units_dir: None,
            pod_cidr: None,
        }
    }
}

pub struct KubernetesRunner {
    kubectl: Kubectl,
    settings: KubernetesSettings,
    units: Units,
    public_host: String,
}

impl KubernetesRunner {
    pub fn new(settings: KubernetesSettings, public_host: String) -> Result<Self, KubernetesError> {
        let kubectl = Kubectl::new(
            settings.kubectl.clone(),
            settings.kubeconfig.clone(),
            settings.context.clone(),
            settings.namespace.clone(),
        );
        let units = Units::load(settings.units_dir.as_deref())?;
        Ok(KubernetesRunner { kubectl, settings, units, public_host })
    }

    pub fn settings(&self) -> &KubernetesSettings {
        &self.settings
    }

    /// `deployment/APP` or `replicationcontroller/APP-vN`: what runs release N.
    pub fn workload(&self, app: &str, release: u32) -> String {
        match self.settings.kind {
            WorkloadKind::Deployment => format!("deployment/{app}"),
            WorkloadKind::ReplicationController => format!("replicationcontroller/{app}-v{release}"),
        }
    }

    /// The release's manifests as one YAML stream, checked against the
    /// schema: its web workload, with `k8s_replicas` pods, and the Service.
    pub fn render(&self, req: &RunRequest<'_>) -> Result<String, KubernetesError> {
        self.render_formation(req, self.settings.replicas, &[])
    }

    /// The release's manifests: its web workload with `replicas` pods, the
    /// Service, and a Deployment of each of `others` (a request of each
    /// other process type, and its count).
    pub fn render_formation(
        &self,
        req: &RunRequest<'_>,
        replicas: u32,
        others: &[(&RunRequest<'_>, u32)],
    ) -> Result<String, KubernetesError> {
        let network = self.network_yaml(req.network)?;
        let mut yaml = format!("{}\n---\n{}", network.trim_end(), self.render_web(req, replicas)?);
        for (other, count) in others {
            let mut context = Self::context(other);
            context.insert("process", other.id.process.as_str());
            context.insert("replicas", count);
            context.insert("timeout", &self.settings.rollout_timeout.as_secs());
            yaml = format!("{}\n---\n{}", yaml.trim_end(), self.units.render(units::K8S_PROCESS, &context)?);
        }
        manifest::parse(&yaml, &format!("release v{} of {}", req.id.release, req.app))?;
        Ok(yaml)
    }

    /// What every Kubernetes template of a request gets.
    fn context(req: &RunRequest<'_>) -> tera::Context {
        let mut context = tera::Context::new();
        context.insert("app", req.app);
        context.insert("release", &req.id.release);
        context.insert("image", req.image);
        context.insert("port", &req.port);
        context.insert("command", &req.command.clone().unwrap_or_default());
        context.insert("network", &req.network.name);
        insert_env_and_limits(&mut context, req.env, req.limits);
        context
    }

    /// The app's NetworkPolicy (the same every release), unchecked: it
    /// goes first in each release's and one-off's manifests, so the app's
    /// pods are on its network before any of them starts.
    fn network_yaml(&self, network: &AppNetwork) -> Result<String, KubernetesError> {
        let mut context = tera::Context::new();
        context.insert("app", network.app.as_deref().unwrap_or_default());
        context.insert("network", &network.name);
        context.insert("pod_cidr", &self.settings.pod_cidr);
        Ok(self.units.render(units::K8S_NETWORK_POLICY, &context)?)
    }

    /// Deletes the app's NetworkPolicy `name`.
    pub async fn remove_network(&self, name: &str) -> Result<(), RunError> {
        let policy = format!("networkpolicy/{name}");
        self.kubectl.run(&["delete", &policy, "--ignore-not-found"], None).await.map_err(KubernetesError::from)?;
        Ok(())
    }

    /// The web workload and the Service, unchecked.
    fn render_web(&self, req: &RunRequest<'_>, replicas: u32) -> Result<String, KubernetesError> {
        let mut context = Self::context(req);
        context.insert("replicas", &replicas);
        context.insert("timeout", &self.settings.rollout_timeout.as_secs());
        context.insert("service_type", &self.settings.service_type);
        let workload = match self.settings.kind {
            WorkloadKind::Deployment => units::K8S_DEPLOYMENT,
            WorkloadKind::ReplicationController => units::K8S_REPLICATION_CONTROLLER,
        };
        Ok(format!(
            "{}\n---\n{}",
            self.units.render(workload, &context)?.trim_end(),
            self.units.render(units::K8S_SERVICE, &context)?
        ))
    }

    fn namespace_shown(&self) -> String {
        match self.kubectl.namespace() {
            Some(namespace) => format!("namespace {namespace}"),
            None => "the kubeconfig's namespace".into(),
        }
    }

    /// Applies the release and waits until it is ready. If it does not
    /// become ready, the cluster goes back to the previous release.
    pub async fn start(&self, req: &RunRequest<'_>, progress: Progress<'_>) -> Result<Running, RunError> {
        self.start_formation(req, self.settings.replicas, &[], progress).await
    }

    /// Applies the release's web workload with `replicas` pods and a
    /// Deployment `APP-TYPE` of each of `others` (a request of each other
    /// process type running, and its count), waits until all are ready,
    /// then deletes the app's Deployments of the types no longer running.
    /// If one does not become ready, every one goes back as it was.
    pub async fn start_formation(
        &self,
        req: &RunRequest<'_>,
        replicas: u32,
        others: &[(&RunRequest<'_>, u32)],
        progress: Progress<'_>,
    ) -> Result<Running, RunError> {
        if !others.is_empty() && self.settings.kind == WorkloadKind::ReplicationController {
            return Err(KubernetesError::Formation.into());
        }
        let yaml = self.render_formation(req, replicas, others)?;
        let workload = self.workload(req.app, req.id.release);
        progress(&format!("Applying {workload} and service/{} in {}", req.app, self.namespace_shown()));
        let applied = self
            .kubectl
            .run_for(&["apply", "--filename=-"], Some(&yaml), self.settings.rollout_timeout, progress)
            .await
            .map_err(KubernetesError::from)?;
        let created = |prefix: &str| applied.lines().any(|l| l.starts_with(prefix) && l.ends_with(" created"));
        let first = match self.settings.kind {
            WorkloadKind::Deployment => created("deployment.apps/"),
            WorkloadKind::ReplicationController => created("service/"),
        };
        let processes: Vec<(String, bool)> = others
            .iter()
            .map(|(other, _)| {
                let name = process_workload(req.app, other.id.process.as_str());
                let fresh = created(&format!("deployment.apps/{} ", &name["deployment/".len()..]));
                (name, fresh)
            })
            .collect();
        let mut ready = self.wait_ready(req.app, req.id.release, progress).await;
        for (name, _) in &processes {
            if ready.is_ok() {
                ready = self.rollout_status(name, progress).await;
            }
        }
        if let Err(reason) = ready {
            let log_tail = self.diagnose(req.app, req.id.release).await;
            self.undo(req.app, req.id.release, first, progress).await;
            for (name, fresh) in &processes {
                let undo: Vec<&str> =
                    if *fresh { vec!["delete", name, "--ignore-not-found"] } else { vec!["rollout", "undo", name] };
                if let Err(err) = self.kubectl.run(&undo, None).await {
                    progress(&format!("could not undo {name}: {err}"));
                }
            }
            return Err(KubernetesError::NotReady { workload, reason, log_tail }.into());
        }
        let running: Vec<&str> = others.iter().map(|(other, _)| other.id.process.as_str()).collect();
        for retired in self.retire_processes(req.app, &running).await? {
            progress(&format!("Deleted {retired}, no longer in the formation"));
        }
        let (port, url) = self.address(req.app).await?;
        info!(%workload, %url, "release ready");
        Ok(Running { name: workload, host: url_host(&url), port, url })
    }

    /// Runs a release phase as a pod `APP-vN-release` and answers its exit
    /// code (`None`: it did not end within `timeout`, which is also the
    /// pod's own deadline): applied, its output followed (each line to
    /// `output`) once it runs, waited for until it ends, then deleted,
    /// whatever happened.
    pub async fn release_phase(&self, job: &crate::OneOff<'_>, timeout: Duration, output: Progress<'_>) -> Ended {
        let (name, yaml) = self.one_off_pod(job, timeout).await?;
        let pod = format!("pod/{name}");
        let deadline = Instant::now() + timeout;
        let ran = async {
            self.kubectl.run(&["apply", "--filename=-"], Some(&yaml)).await?;
            self.wait_for_pod(&name, deadline, false).await?;
            let logs = ["logs", "--follow", pod.as_str()];
            let left = deadline.saturating_duration_since(Instant::now());
            self.kubectl.run_for(&logs, None, left, output).await?;
            self.wait_for_pod(&name, deadline, true).await
        }
        .await;
        self.discard_one_off(&name).await;
        match ran {
            Ok(code) => Ok(Some(code.unwrap_or(-1))),
            Err(KubectlError::Timeout { .. }) => Ok(None),
            Err(err) => Err(KubernetesError::from(err).into()),
        }
    }

    /// The one-off pod `APP-vN-WHAT` of `job` (its name and manifest,
    /// checked), once a leftover of the same name is gone.
    async fn one_off_pod(&self, job: &crate::OneOff<'_>, timeout: Duration) -> Result<(String, String), RunError> {
        let name = format!("{}-v{}-{}", job.app, job.release, job.what.replace('.', "-"));
        let mut context = tera::Context::new();
        context.insert("name", &name);
        context.insert("app", job.app);
        context.insert("release", &job.release);
        context.insert("image", job.image);
        context.insert("command", job.command);
        context.insert("stdin", &job.stdin);
        context.insert("network", &job.network.name);
        insert_env_and_limits(&mut context, job.env, job.limits);
        context.insert("timeout", &timeout.as_secs());
        let pod = self.units.render(units::K8S_ONE_OFF, &context).map_err(KubernetesError::from)?;
        let yaml = format!("{}\n---\n{pod}", self.network_yaml(job.network)?.trim_end());
        manifest::parse(&yaml, &format!("one-off pod {name}")).map_err(KubernetesError::from)?;
        // A pod of the same name can only be a leftover of this one.
        self.discard_one_off(&name).await;
        Ok((name, yaml))
    }

    /// Starts `job` (`run`) as a pod and attaches to it: `kubectl attach -i`
    /// once it runs (or `kubectl logs`, when it ended first), its standard
    /// streams piped. The pod may run for `timeout` at most.
    pub async fn start_one_off(
        &self,
        job: &crate::OneOff<'_>,
        timeout: Duration,
    ) -> Result<(String, tokio::process::Child), RunError> {
        let (name, yaml) = self.one_off_pod(job, timeout).await?;
        let started = async {
            self.kubectl.run(&["apply", "--filename=-"], Some(&yaml)).await?;
            let ended = self.wait_for_pod(&name, Instant::now() + self.settings.rollout_timeout, false).await?;
            let pod = format!("pod/{name}");
            match ended {
                None => self.kubectl.attached(&["attach", "-i", pod.as_str()]),
                Some(_) => self.kubectl.attached(&["logs", pod.as_str()]),
            }
        }
        .await;
        match started {
            Ok(child) => Ok((name, child)),
            Err(err) => {
                self.discard_one_off(&name).await;
                Err(KubernetesError::from(err).into())
            }
        }
    }

    /// Waits until one-off pod `name` has ended; its exit code.
    pub async fn one_off_exit(&self, name: &str) -> Result<i64, RunError> {
        let deadline = Instant::now() + self.settings.rollout_timeout;
        let code = self.wait_for_pod(name, deadline, true).await.map_err(KubernetesError::from)?;
        Ok(code.unwrap_or(-1))
    }

    /// Deletes one-off pod `name`, without waiting for it to go.
    pub async fn discard_one_off(&self, name: &str) {
        let pod = format!("pod/{name}");
        if let Err(err) = self.kubectl.run(&["delete", &pod, "--ignore-not-found", "--wait=false"], None).await {
            warn!(%pod, error = %err, "could not delete a one-off pod");
        }
    }

    /// Polls pod `name` until it runs (or has ended), or with `ended` until
    /// it has ended; then answers its container's exit code, if it ended.
    async fn wait_for_pod(&self, name: &str, deadline: Instant, ended: bool) -> Result<Option<i64>, KubectlError> {
        loop {
            let pod: Pod = self.kubectl.get(&["pod", name]).await?;
            let status = pod.status.unwrap_or_default();
            let exit = status
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref())
                .map(|terminated| i64::from(terminated.exit_code));
            let phase = status.phase.unwrap_or_default();
            match phase.as_str() {
                "Succeeded" | "Failed" => return Ok(exit.or(Some(i64::from(phase == "Failed")))),
                "Running" if !ended => return Ok(None),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(KubectlError::Timeout {
                    verb: format!("wait for pod/{name}"),
                    seconds: self.settings.rollout_timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for a Deployment's rollout, within `k8s_timeout`.
    async fn rollout_status(&self, workload: &str, progress: Progress<'_>) -> Result<(), KubectlError> {
        let limit = self.settings.rollout_timeout;
        let timeout = format!("--timeout={}s", limit.as_secs());
        let status = ["rollout", "status", workload, timeout.as_str()];
        self.kubectl.run_for(&status, None, limit + Duration::from_secs(10), progress).await.map(|_| ())
    }

    /// Deletes the app's process Deployments (besides web) of the types
    /// not in `running`; answers what it deleted.
    async fn retire_processes(&self, app: &str, running: &[&str]) -> Result<Vec<String>, RunError> {
        let selector = format!("--selector={PROCESS_OF}={app}");
        let found: Items<k8s_openapi::api::apps::v1::Deployment> =
            self.kubectl.get(&["deployments", &selector]).await.map_err(KubernetesError::from)?;
        let mut retired = Vec::new();
        for deployment in found.items {
            let labels = deployment.metadata.labels.unwrap_or_default();
            let kind = labels.get(labels::PROCESS).map(String::as_str).unwrap_or_default();
            let Some(name) = deployment.metadata.name else { continue };
            if running.contains(&kind) {
                continue;
            }
            let workload = format!("deployment/{name}");
            self.kubectl
                .run(&["delete", &workload, "--ignore-not-found"], None)
                .await
                .map_err(KubernetesError::from)?;
            retired.push(workload);
        }
        Ok(retired)
    }

    /// Waits until the release's pods are ready; the error is why not.
    async fn wait_ready(&self, app: &str, release: u32, progress: Progress<'_>) -> Result<(), KubectlError> {
        let limit = self.settings.rollout_timeout;
        match self.settings.kind {
            // kubectl's own deadline comes first; ours only guards a hung kubectl.
            WorkloadKind::Deployment => self.rollout_status(&self.workload(app, release), progress).await,
            WorkloadKind::ReplicationController => self.wait_rc_ready(app, release, limit, progress).await,
        }
    }

    async fn wait_rc_ready(
        &self,
        app: &str,
        release: u32,
        limit: Duration,
        progress: Progress<'_>,
    ) -> Result<(), KubectlError> {
        let name = format!("{app}-v{release}");
        let deadline = Instant::now() + limit;
        let mut shown = None;
        loop {
            let rc: ReplicationController = self.kubectl.get(&["replicationcontroller", &name]).await?;
            let wanted = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = rc.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            if shown != Some(ready) {
                progress(&format!("{ready} of {wanted} pods of {name} ready"));
                shown = Some(ready);
            }
            if ready >= wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KubectlError::Timeout { verb: format!("wait for {name}"), seconds: limit.as_secs() });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Why the release's pods are not ready, and their last output.
    async fn diagnose(&self, app: &str, release: u32) -> Vec<String> {
        let selector = format!("--selector={}={app},{}={release}", labels::APP, labels::RELEASE);
        let mut lines = Vec::new();
        if let Ok(pods) = self.kubectl.get::<Items<Pod>>(&["pods", &selector]).await {
            for pod in &pods.items {
                let name = pod.metadata.name.as_deref().unwrap_or("pod");
                let message = waiting(pod).and_then(|w| w.message.as_deref()).unwrap_or_default();
                lines.push(format!("{name}: {} {message}", pod_state(pod)).trim_end().to_owned());
            }
        }
        let tail = format!("--tail={LOG_TAIL}");
        let logs = ["logs", &selector, "--all-containers", "--prefix", &tail];
        if let Ok(output) = self.kubectl.run(&logs, None).await {
            lines.extend(output.lines().map(str::to_owned));
        }
        lines
    }

    /// Takes a release that did not become ready out again. A first release
    /// leaves nothing behind; a later one goes back to the previous release.
    async fn undo(&self, app: &str, release: u32, first: bool, progress: Progress<'_>) {
        let workload = self.workload(app, release);
        let service = format!("service/{app}");
        let undo: Vec<&str> = match (self.settings.kind, first) {
            (WorkloadKind::Deployment, false) => vec!["rollout", "undo", &workload],
            (_, true) => vec!["delete", &workload, &service, "--ignore-not-found"],
            (WorkloadKind::ReplicationController, false) => vec!["delete", &workload, "--ignore-not-found"],
        };
        progress(&format!("Undoing {workload}"));
        if let Err(err) = self.kubectl.run(&undo, None).await {
            warn!(%workload, error = %err, "could not undo a failed release");
            progress(&format!("could not undo {workload}: {err}"));
        }
    }

    /// Takes back a release that became ready but must not serve: the
    /// Deployment goes back a revision (or away, if it has none), an RC goes.
    pub async fn discard(&self, app: &str, release: u32) -> Result<(), RunError> {
        let workload = self.workload(app, release);
        let result = match self.settings.kind {
            WorkloadKind::Deployment => match self.kubectl.run(&["rollout", "undo", &workload], None).await {
                Ok(_) => Ok(()),
                Err(_) => self.kubectl.run(&["delete", &workload, "--ignore-not-found"], None).await.map(|_| ()),
            },
            WorkloadKind::ReplicationController => {
                self.kubectl.run(&["delete", &workload, "--ignore-not-found"], None).await.map(|_| ())
            }
        };
        result.map_err(|e| KubernetesError::from(e).into())
    }

    /// The app's address: `(port, URL)` from its Service.
    async fn address(&self, app: &str) -> Result<(u16, String), KubernetesError> {
        let service: Service = self.kubectl.get(&["service", app]).await?;
        let spec = service.spec.unwrap_or_default();
        let port = spec.ports.as_ref().and_then(|p| p.first());
        let node_port = port.and_then(|p| p.node_port).and_then(|p| u16::try_from(p).ok());
        let ingress = service.status.and_then(|s| s.load_balancer?.ingress?.into_iter().next());
        let namespace = service.metadata.namespace.unwrap_or_else(|| "default".into());
        Ok(match (ingress, node_port) {
            (Some(ingress), _) => {
                let host = ingress.hostname.or(ingress.ip).unwrap_or_else(|| self.public_host.clone());
                (80, format!("http://{host}/"))
            }
            (None, Some(node_port)) => (node_port, format!("http://{}:{node_port}/", self.public_host)),
            (None, None) => (80, format!("http://{app}.{namespace}.svc.cluster.local/")),
        })
    }

    /// Retires every release of `app` but `keep`; with `None`, everything
    /// nap made for the app, its Service included.
    pub async fn retire_all_but(&self, app: &str, keep: Option<u32>) -> Result<Vec<String>, RunError> {
        let args: Vec<String> = match (keep, self.settings.kind) {
            // The Deployment's rollout already replaced the old pods.
            (Some(_), WorkloadKind::Deployment) => return Ok(Vec::new()),
            (Some(keep), WorkloadKind::ReplicationController) => vec![
                "replicationcontroller".into(),
                format!("--selector={}={app},{}!={keep}", labels::APP, labels::RELEASE),
            ],
            (None, _) => {
                vec!["deployment,replicationcontroller,service".into(), format!("--selector={}={app}", labels::APP)]
            }
        };
        let mut full = vec!["delete", "--ignore-not-found", "--output=name"];
        full.extend(args.iter().map(String::as_str));
        let deleted = self.kubectl.run(&full, None).await.map_err(KubernetesError::from)?;
        let mut deleted: Vec<String> =
            deleted.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        if keep.is_none() {
            deleted.extend(self.retire_processes(app, &[]).await?);
        }
        Ok(deleted)
    }

    /// Restarts the release's pods and waits until they are ready again.
    pub async fn restart(&self, serving: Serving<'_>, progress: Progress<'_>) -> Result<(), RunError> {
        let Serving { app, release } = serving;
        let workload = self.workload(app, release);
        progress(&format!("Restarting {workload}"));
        let selector = format!("--selector={}={app},{}={release}", labels::APP, labels::RELEASE);
        let restart: Vec<&str> = match self.settings.kind {
            WorkloadKind::Deployment => vec!["rollout", "restart", &workload],
            // An RC has no restart: its pods are deleted and it makes new ones.
            WorkloadKind::ReplicationController => vec!["delete", "pods", &selector],
        };
        self.kubectl.run(&restart, None).await.map_err(KubernetesError::from)?;
        self.wait_ready(app, release, progress)
            .await
            .map_err(|reason| RunError::from(KubernetesError::NotReady { workload, reason, log_tail: Vec::new() }))
    }

    /// The pods nap runs, by app; each numbered within its app and type.
    pub async fn instances(&self, app: Option<&str>) -> Result<HashMap<String, Vec<Instance>>, RunError> {
        let mut pods = Vec::new();
        for label in [labels::APP, PROCESS_OF] {
            let selector = match app {
                Some(app) => format!("--selector={label}={app}"),
                None => format!("--selector={label}"),
            };
            let found: Items<Pod> = self.kubectl.get(&["pods", &selector]).await.map_err(KubernetesError::from)?;
            pods.extend(found.items);
        }
        let mut by_app: HashMap<String, Vec<Instance>> = HashMap::new();
        for pod in pods {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let Some(app) = labels.get(labels::APP).or_else(|| labels.get(PROCESS_OF)) else { continue };
            by_app.entry(app.clone()).or_default().push(Instance {
                name: pod.metadata.name.clone().unwrap_or_default(),
                release: labels.get(labels::RELEASE).and_then(|r| r.parse().ok()).unwrap_or_default(),
                state: pod_state(&pod),
                started_at: pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()),
                restarts: 0,
                process: labels
                    .get(labels::PROCESS)
                    .and_then(|kind| crate::ProcessType::parse(kind).ok())
                    .unwrap_or_else(crate::ProcessType::web),
                index: 0,
                crashes: pod_restarts(&pod),
                address: None,
            });
        }
        Ok(by_app)
    }

    /// The app's pods' output, each line prefixed with its pod.
    pub fn logs(
        &self,
        app: &str,
        tail: Option<u64>,
        follow: bool,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, RunError>> + use<> {
        use futures_util::StreamExt;
        let selector = format!("--selector={}={app}", labels::APP);
        // kubectl shows 10 lines per pod with a selector unless told otherwise.
        let tail = format!("--tail={}", tail.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        let mut args = vec!["logs", selector.as_str(), "--all-containers", "--prefix", tail.as_str()];
        args.push("--max-log-requests=20");
        if follow {
            args.push("--follow");
        }
        self.kubectl.stream(&args).map(|item| item.map_err(|e| RunError::from(KubernetesError::from(e))))
    }
}

/// What `kubectl get KIND -o json` prints for several objects: kubectl's
/// own `kind: List`, which k8s-openapi's typed lists (`PodList`) refuse.
#[derive(Debug, serde::Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

/// How many times the pod's containers were started again.
fn pod_restarts(pod: &Pod) -> u32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().map(|c| u32::try_from(c.restart_count).unwrap_or(0)).sum()
}

/// A pod's state as `ps` shows it: why a container waits, else the phase.
fn pod_state(pod: &Pod) -> String {
    match waiting(pod) {
        Some(waiting) => waiting.reason.clone().unwrap_or_else(|| "waiting".into()),
        None => pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown").to_lowercase(),
    }
}

/// The state of the first container that is not running yet, if any.
fn waiting(pod: &Pod) -> Option<&ContainerStateWaiting> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref())
}

/// The host of `http://HOST[:PORT]/...`.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_owned()
}

#[cfg(test)]
mod tests {
    use super::manifest::Manifest;
    use super::*;

    fn runner(kind: WorkloadKind) -> KubernetesRunner {
        let settings = KubernetesSettings { kind, replicas: 2, ..KubernetesSettings::default() };
        KubernetesRunner::new(settings, "example.test".into()).expect("built-in units load")
    }

    fn render(kind: WorkloadKind, env: &[(String, String)], limits: crate::Limits) -> Vec<Manifest> {
        let command = ["sh", "-c", "exec server --port \"$PORT\" # {{ x }}"].map(str::to_owned).to_vec();
        let req = RunRequest {
            app: "shop",
            id: crate::InstanceId::web(7, 0),
            image: "registry:5000/shop:v7",
            command: (kind == WorkloadKind::Deployment).then_some(command),
            check: None,
            port: 8080,
            env,
            limits,
            placement: &[],
            network: &AppNetwork::of_app("shop", None),
        };
        let yaml = runner(kind).render(&req).expect("renders");
        manifest::parse(&yaml, "test").expect("valid manifests")
    }

    #[test]
    fn a_release_is_a_deployment_and_a_service_whatever_its_config_holds() {
        let tricky = "a \"quoted\" value: with\nnewlines, #hash and {{ braces }}";
        let env = [("GREETING".to_owned(), tricky.to_owned()), ("EMPTY".to_owned(), String::new())];
        let mut limits = crate::Limits::default();
        limits.set("memory=512m").and_then(|()| limits.set("cpus=1.5")).expect("limits");
        let manifests = render(WorkloadKind::Deployment, &env, limits);
        let [Manifest::NetworkPolicy(_), Manifest::Deployment(deployment), Manifest::Service(service)] =
            manifests.as_slice()
        else {
            panic!("expected the app's NetworkPolicy, a Deployment and a Service: {manifests:?}");
        };
        assert_eq!(deployment.metadata.name.as_deref(), Some("shop"));
        let spec = deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("registry:5000/shop:v7"));
        let args = container.args.clone().expect("the Procfile's web command");
        assert_eq!(args, ["sh", "-c", "exec server --port \"$PORT\" # {{ x }}"]);
        let env: Vec<_> =
            container.env.iter().flatten().map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or_default())).collect();
        assert_eq!(env, [("PORT", "8080"), ("GREETING", tricky), ("EMPTY", "")]);
        let resources = container.resources.as_ref().and_then(|r| r.limits.as_ref()).expect("resources.limits");
        let resources: Vec<_> = resources.iter().map(|(name, value)| (name.as_str(), value.0.as_str())).collect();
        assert_eq!(resources, [("cpu", "1500m"), ("memory", "536870912")]);
        let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector");
        assert_eq!(selector.get(labels::APP).map(String::as_str), Some("shop"));
    }

    #[test]
    fn an_apps_network_policy_admits_its_own_pods_and_only_the_web_port_from_elsewhere() {
        // It comes first in every release's manifests, checked with them.
        let manifests = render(WorkloadKind::Deployment, &[], crate::Limits::default());
        let [Manifest::NetworkPolicy(policy), Manifest::Deployment(deployment), _] = manifests.as_slice() else {
            panic!("expected the NetworkPolicy first: {manifests:?}");
        };
        assert_eq!(policy.metadata.name.as_deref(), Some("nap-shop"));
        let spec = policy.spec.as_ref().expect("spec");
        let own = BTreeMap::from([(labels::NETWORK.to_owned(), "nap-shop".to_owned())]);
        assert_eq!(spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone()), Some(own.clone()));
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
        let rules = spec.ingress.as_deref().expect("ingress rules");
        let [same_app, web] = rules else { panic!("two rules: {rules:?}") };
        let peers = same_app.from.as_deref().expect("peers");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].pod_selector.as_ref().and_then(|s| s.match_labels.clone()), Some(own));
        assert!(peers[0].namespace_selector.is_none() && peers[0].ip_block.is_none(), "{peers:?}");
        assert!(same_app.ports.is_none(), "the app's own pods reach every port");
        assert!(web.from.is_none(), "the web port from anywhere, as its Service publishes it");
        let port = web.ports.as_deref().and_then(|p| p.first()).and_then(|p| p.port.clone());
        assert_eq!(port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into())));

        // Every pod of the app carries the label the policy selects.
        let template = deployment.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).expect("template");
        let pod_labels = template.labels.as_ref().expect("labels");
        assert_eq!(pod_labels.get(labels::NETWORK).map(String::as_str), Some("nap-shop"));
        let ports = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod").containers[0]
            .ports
            .clone()
            .expect("ports");
        assert_eq!(ports[0].name.as_deref(), Some("http"), "the port the policy names");
    }

    #[test]
    fn with_the_pod_network_known_the_web_port_is_closed_to_other_pods() {
        let settings = KubernetesSettings { pod_cidr: Some("10.244.0.0/16".into()), ..KubernetesSettings::default() };
        let runner = KubernetesRunner::new(settings, "example.test".into()).expect("built-in units load");
        let network = AppNetwork::of_app("shop", None);
        let yaml = runner.network_yaml(&network).expect("rendered");
        let manifests = manifest::parse(&yaml, "the policy").expect("checked against the schema");
        let [Manifest::NetworkPolicy(policy)] = manifests.as_slice() else { panic!("a NetworkPolicy: {yaml}") };
        let rules = policy.spec.clone().and_then(|spec| spec.ingress).expect("ingress rules");
        let block = rules[1].from.as_deref().and_then(|peers| peers[0].ip_block.clone()).expect("an ipBlock");
        assert_eq!(block.cidr, "0.0.0.0/0");
        assert_eq!(block.except.as_deref(), Some(&["10.244.0.0/16".to_owned()][..]));
    }

    #[test]
    fn an_rc_release_selects_only_its_own_pods() {
        let manifests = render(WorkloadKind::ReplicationController, &[], crate::Limits::default());
        let [Manifest::NetworkPolicy(_), Manifest::ReplicationController(rc), Manifest::Service(_)] =
            manifests.as_slice()
        else {
            panic!("expected the NetworkPolicy, a ReplicationController and a Service: {manifests:?}");
        };
        assert_eq!(rc.metadata.name.as_deref(), Some("shop-v7"));
        let selector = rc.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector");
        assert_eq!(selector.get(labels::RELEASE).map(String::as_str), Some("7"));
        let pod = rc.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref()).expect("pod");
        assert!(pod.containers[0].resources.is_none(), "no limits set, no resources");
        assert!(pod.containers[0].args.is_none(), "no Procfile, the image's command");
    }
}
