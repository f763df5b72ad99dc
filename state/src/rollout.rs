//! The rollout request of the CI/CD write-up, with its field names as they
//! are, so its templates read what nap writes unchanged.

use serde::{Deserialize, Serialize};

/// `/k8s-deploy/PROJECT/rollout/ENV`: run `image_latest` as the container
/// `app_name` of Deployment `APPPARENT-APPNAME` in `k8s_namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub k8s_namespace: String,
    pub app_parent: String,
    pub app_name: String,
    pub image_latest: String,
}

/// `/k8s-deploy/PROJECT/undo/ENV`: undo the last rollout of Deployment
/// `APPPARENT-APPNAME` in `k8s_namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Undo {
    pub k8s_namespace: String,
    pub app_parent: String,
    pub app_name: String,
}
