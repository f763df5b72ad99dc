//! The templates in `units/`. Each is built into nap and can be replaced by
//! a file of the same name in the operator's `units_dir`, so a site can
//! change what nap renders without rebuilding it. They are loaded into one
//! tera instance, so one template can `{% include %}` another.

use std::path::Path;

/// The systemd runner's unit for one release.
pub const SYSTEMD_SERVICE: &str = "app.service.tera";
/// The Kubernetes runner's workload for every release of an app.
pub const K8S_DEPLOYMENT: &str = "k8s-deployment.yaml.tera";
/// The Kubernetes runner's workload for one release, for older clusters.
pub const K8S_REPLICATION_CONTROLLER: &str = "k8s-rc.yaml.tera";
/// The pod template both Kubernetes workloads include.
pub const K8S_POD: &str = "k8s-pod.yaml.tera";
/// The Kubernetes runner's Deployment of a process type besides web.
pub const K8S_PROCESS: &str = "k8s-process.yaml.tera";
/// The Kubernetes runner's one-off pod: a release phase, or `run`.
pub const K8S_ONE_OFF: &str = "k8s-one-off.yaml.tera";
/// The Kubernetes runner's Service in front of the app.
pub const K8S_SERVICE: &str = "k8s-service.yaml.tera";
/// The Kubernetes runner's NetworkPolicy of an app: its own network.
pub const K8S_NETWORK_POLICY: &str = "k8s-network-policy.yaml.tera";
/// The commiter flow's take-over ReplicationController.
pub const TAKEOVER_RC: &str = "takeover-rc.yaml.tera";

const BUILTIN: &[(&str, &str)] = &[
    (SYSTEMD_SERVICE, include_str!("../../units/app.service.tera")),
    (K8S_DEPLOYMENT, include_str!("../../units/k8s-deployment.yaml.tera")),
    (K8S_REPLICATION_CONTROLLER, include_str!("../../units/k8s-rc.yaml.tera")),
    (K8S_POD, include_str!("../../units/k8s-pod.yaml.tera")),
    (K8S_SERVICE, include_str!("../../units/k8s-service.yaml.tera")),
    (K8S_PROCESS, include_str!("../../units/k8s-process.yaml.tera")),
    (K8S_ONE_OFF, include_str!("../../units/k8s-one-off.yaml.tera")),
    (K8S_NETWORK_POLICY, include_str!("../../units/k8s-network-policy.yaml.tera")),
    (TAKEOVER_RC, include_str!("../../units/takeover-rc.yaml.tera")),
];

#[derive(Debug, thiserror::Error)]
#[error("unit template {name}: {message}")]
pub struct UnitError {
    pub name: String,
    pub message: String,
}

impl UnitError {
    fn new(name: &str, err: &tera::Error) -> Self {
        // tera's own message is only "failed to render"; the cause is below it.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        UnitError { name: name.to_owned(), message }
    }
}

pub struct Units {
    tera: tera::Tera,
}

impl Units {
    /// The built-in templates, each replaced by `DIR/NAME` where it exists.
    pub fn load(dir: Option<&Path>) -> Result<Units, UnitError> {
        let mut templates = Vec::with_capacity(BUILTIN.len());
        for (name, builtin) in BUILTIN {
            let local = dir.map(|dir| dir.join(name)).filter(|path| path.exists());
            let text = match local {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| UnitError { name: path.display().to_string(), message: e.to_string() })?,
                None => (*builtin).to_owned(),
            };
            templates.push((*name, text));
        }
        let mut tera = tera::Tera::default();
        // Values a user chose (config vars) go into YAML as JSON strings,
        // which YAML reads back unchanged whatever they contain.
        tera.register_filter("quote", |value: &str, _: tera::Kwargs, _: &tera::State| {
            serde_json::Value::from(value).to_string()
        });
        // One batch, so a template may include one loaded after it.
        tera.add_raw_templates(templates.iter().map(|(name, text)| (*name, text.as_str())))
            .map_err(|e| UnitError::new("units", &e))?;
        Ok(Units { tera })
    }

    /// Replaces one template, e.g. with the one an app's repo ships.
    pub fn render(&self, name: &str, context: &tera::Context) -> Result<String, UnitError> {
        self.tera.render(name, context).map_err(|e| UnitError::new(name, &e))
    }
}
