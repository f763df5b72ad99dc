//! Rendered manifests, checked against the official Kubernetes schema (the
//! k8s-openapi types) before anything reaches a cluster. A field the types do
//! not know is an error here, where `kubectl apply` would drop it or refuse
//! it only after part of the release was applied.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ReplicationController, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{source_name}: not YAML: {message}")]
    Yaml { source_name: String, message: String },
    #[error("{source_name}: document {index} has no kind")]
    NoKind { source_name: String, index: usize },
    #[error(
        "{source_name}: kind {kind} is not one nap applies (Deployment, ReplicationController, Service, Ingress, ConfigMap, NetworkPolicy)"
    )]
    UnknownKind { source_name: String, kind: String },
    #[error("{source_name}: {kind} does not match the Kubernetes schema: {source}")]
    Schema {
        source_name: String,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{source_name}: {kind} has fields Kubernetes does not know: {}", fields.join(", "))]
    UnknownFields { source_name: String, kind: String, fields: Vec<String> },
}

/// One checked manifest.
#[derive(Debug, Clone)]
pub enum Manifest {
    Deployment(Box<Deployment>),
    ReplicationController(Box<ReplicationController>),
    Service(Box<Service>),
    Ingress(Box<Ingress>),
    ConfigMap(Box<ConfigMap>),
    /// The release phase's one-off pod.
    Pod(Box<Pod>),
    /// An app's own network.
    NetworkPolicy(Box<NetworkPolicy>),
}

/// Parses every YAML document in `yaml` (named `source_name` in errors) and
/// checks each against its kind's schema.
pub fn parse(yaml: &str, source_name: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let yaml_err =
            |e: serde_yaml::Error| ManifestError::Yaml { source_name: source_name.into(), message: e.to_string() };
        let value = <Value as serde::Deserialize>::deserialize(document).map_err(yaml_err)?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let Some(kind) = value.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ManifestError::NoKind { source_name: source_name.into(), index: index + 1 });
        };
        let manifest = match kind.as_str() {
            "Deployment" => Manifest::Deployment(checked(&value, source_name, &kind)?),
            "ReplicationController" => Manifest::ReplicationController(checked(&value, source_name, &kind)?),
            "Service" => Manifest::Service(checked(&value, source_name, &kind)?),
            "Ingress" => Manifest::Ingress(checked(&value, source_name, &kind)?),
            "ConfigMap" => Manifest::ConfigMap(checked(&value, source_name, &kind)?),
            "Pod" => Manifest::Pod(checked(&value, source_name, &kind)?),
            "NetworkPolicy" => Manifest::NetworkPolicy(checked(&value, source_name, &kind)?),
            _ => return Err(ManifestError::UnknownKind { source_name: source_name.into(), kind }),
        };
        manifests.push(manifest);
    }
    Ok(manifests)
}

/// Reads `value` as `T` and proves nothing was dropped on the way: the
/// types ignore fields they do not know, so the value must survive a round
/// trip through them whole.
fn checked<T: DeserializeOwned + Serialize>(
    value: &Value,
    source_name: &str,
    kind: &str,
) -> Result<Box<T>, ManifestError> {
    let schema_err = |source| ManifestError::Schema { source_name: source_name.into(), kind: kind.into(), source };
    let typed: T = serde_json::from_value(value.clone()).map_err(schema_err)?;
    let round_trip = serde_json::to_value(&typed).map_err(schema_err)?;
    let mut fields = Vec::new();
    dropped_fields(value, &round_trip, "", &mut fields);
    if !fields.is_empty() {
        return Err(ManifestError::UnknownFields { source_name: source_name.into(), kind: kind.into(), fields });
    }
    Ok(Box::new(typed))
}

/// The paths (`spec.template.spec.containers[0].imagePullPolicyy`) that are
/// in `original` but not in `kept`.
fn dropped_fields(original: &Value, kept: &Value, path: &str, found: &mut Vec<String>) {
    match (original, kept) {
        (Value::Object(original), Value::Object(kept)) => {
            for (name, value) in original {
                let here = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                match kept.get(name) {
                    // An explicit null says "unset", which the types keep as absent.
                    None if value.is_null() => {}
                    None => found.push(here),
                    Some(kept) => dropped_fields(value, kept, &here, found),
                }
            }
        }
        (Value::Array(original), Value::Array(kept)) => {
            for (index, (value, kept)) in original.iter().zip(kept).enumerate() {
                dropped_fields(value, kept, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

impl Manifest {
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Deployment(_) => "Deployment",
            Manifest::ReplicationController(_) => "ReplicationController",
            Manifest::Service(_) => "Service",
            Manifest::Ingress(_) => "Ingress",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Pod(_) => "Pod",
            Manifest::NetworkPolicy(_) => "NetworkPolicy",
        }
    }

    pub fn name(&self) -> Option<&str> {
        let metadata = match self {
            Manifest::Deployment(m) => &m.metadata,
            Manifest::ReplicationController(m) => &m.metadata,
            Manifest::Service(m) => &m.metadata,
            Manifest::Ingress(m) => &m.metadata,
            Manifest::ConfigMap(m) => &m.metadata,
            Manifest::Pod(m) => &m.metadata,
            Manifest::NetworkPolicy(m) => &m.metadata,
        };
        metadata.name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RC: &str = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: a\nspec:\n  replicas: 1\n  selector:\n    app: a\n  template:\n    metadata:\n      labels:\n        app: a\n    spec:\n      containers:\n        - name: a\n          image: busybox\n";

    #[test]
    fn a_known_manifest_passes() {
        let manifests = parse(RC, "rc.yaml").expect("valid");
        assert_eq!(manifests.len(), 1);
        assert_eq!(manifests[0].name(), Some("a"));
    }

    #[test]
    fn a_misspelt_field_is_named_with_its_path() {
        let typo = RC.replace("image: busybox", "image: busybox\n          imagePullPolicyy: Always");
        let err = parse(&typo, "rc.yaml").expect_err("unknown field");
        assert_eq!(
            err.to_string(),
            "rc.yaml: ReplicationController has fields Kubernetes does not know: \
             spec.template.spec.containers[0].imagePullPolicyy"
        );
    }

    #[test]
    fn a_wrong_type_or_kind_is_refused() {
        let wrong = RC.replace("replicas: 1", "replicas: one");
        assert!(matches!(parse(&wrong, "rc.yaml"), Err(ManifestError::Schema { .. })));
        let secret = RC.replace("kind: ReplicationController", "kind: Secret");
        assert!(matches!(parse(&secret, "rc.yaml"), Err(ManifestError::UnknownKind { .. })));
        let version = RC.replace("apiVersion: v1", "apiVersion: apps/v1");
        assert!(matches!(parse(&version, "rc.yaml"), Err(ManifestError::Schema { .. })));
    }
}
