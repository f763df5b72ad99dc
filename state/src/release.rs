//! The release model: each deploy attempt of an app is release vN.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Pairs, Store, StoreError, layout};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    /// Building or starting; not yet serving.
    Pending,
    /// Answered its start check and is (or was) serving.
    Succeeded,
    /// The build or the start check failed; it never served.
    Failed,
}

/// What caused a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReleaseCause {
    /// A `git push` of `commit`.
    Push { key: String },
    /// `config set` / `config unset`; `change` names what changed.
    Config { key: String, change: String },
    /// `rollback` to release `to`.
    Rollback { key: String, to: u32 },
    /// `limits set` / `limits unset`; `change` names what changed.
    Limits { key: String, change: String },
}

impl ReleaseCause {
    /// Who caused the release: a key name, or `admin` for the host's own CLI.
    pub fn key(&self) -> &str {
        match self {
            ReleaseCause::Push { key }
            | ReleaseCause::Config { key, .. }
            | ReleaseCause::Rollback { key, .. }
            | ReleaseCause::Limits { key, .. } => key,
        }
    }

    /// What was done, without who: `config set A, B`, `rollback to v5`.
    pub fn action(&self) -> String {
        match self {
            ReleaseCause::Push { .. } => "push".to_owned(),
            ReleaseCause::Config { change, .. } => format!("config {change}"),
            ReleaseCause::Rollback { to, .. } => format!("rollback to v{to}"),
            ReleaseCause::Limits { change, .. } => format!("limits {change}"),
        }
    }
}

/// `config set A by alice`.
impl std::fmt::Display for ReleaseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}", self.action(), self.key())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: u32,
    pub commit: String,
    pub image: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: ReleaseStatus,
    pub cause: ReleaseCause,
    /// The port the app listens on inside its container (`PORT`).
    #[serde(default)]
    pub port: u16,
    /// The app's environment for this release, besides `PORT`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What runs this release, once started: its container (the docker and
    /// systemd runners; a unit runs its release's container) or its
    /// Kubernetes workload. Stored and shown as `container`, as it always was.
    #[serde(default, rename = "container")]
    pub workload: Option<String>,
    /// How many times `restart` started this release afresh; its instance
    /// is the release's start number `restarts` (see the runner's
    /// `InstanceId`).
    #[serde(default)]
    pub restarts: u32,
    /// Where the release answers, once started.
    #[serde(default)]
    pub url: Option<String>,
    /// Why the release failed, for `Failed` releases.
    #[serde(default)]
    pub error: Option<String>,
    /// The release's `Procfile` and `app.json` as pushed (the runner reads
    /// them); none: `web` runs the image's own command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_json: Option<String>,
}

/// The address (`IP:PORT`) of each instance whose keys are among `pairs`,
/// by (app, instance id); `None` while its IP or port is missing. Other keys
/// are passed over. The one reading of the instance keys: the release flow
/// and the routers both use it.
pub fn instance_addresses<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<(&'a str, &'a str), Option<String>> {
    // (app, id) → (IP, port), as far as the keys go.
    type Fields = (Option<String>, Option<String>);
    let mut fields: BTreeMap<(&str, &str), Fields> = BTreeMap::new();
    for (key, value) in pairs {
        let Some((app, id, field)) = layout::parse_instance_field(key) else { continue };
        let value = String::from_utf8_lossy(value).trim().to_owned();
        let entry = fields.entry((app, id)).or_default();
        match field {
            "ip" => entry.0 = Some(value),
            "port" => entry.1 = Some(value),
            _ => {}
        }
    }
    fields
        .into_iter()
        .map(|(instance, (ip, port))| (instance, ip.zip(port).map(|(ip, port)| format!("{ip}:{port}"))))
        .collect()
}

impl Release {
    pub fn tag(&self) -> String {
        format!("v{}", self.version)
    }
}

/// Reading and writing releases through the store.
impl Store {
    pub async fn releases(&self, app: &str) -> Result<Vec<Release>, StoreError> {
        self.list_json(&layout::releases(app)).await
    }

    pub async fn release(&self, app: &str, version: u32) -> Result<Option<Release>, StoreError> {
        self.get_json(&layout::release(app, version)).await
    }

    pub async fn save_release(&self, app: &str, release: &Release) -> Result<(), StoreError> {
        self.put_json(&layout::release(app, release.version), release).await
    }

    /// The number the next release of `app` gets. Only meaningful under the
    /// app's deploy lock.
    /// The ID of the image nap built for `app` from git tree `tree`, if any.
    pub async fn tree_image(&self, app: &str, tree: &str) -> Result<Option<String>, StoreError> {
        let value = self.get(&layout::tree_image(app, tree)).await?;
        Ok(value.and_then(|id| String::from_utf8(id).ok()))
    }

    /// Records that nap built the image `id` for `app` from git tree `tree`.
    pub async fn record_tree_image(&self, app: &str, tree: &str, id: &str) -> Result<(), StoreError> {
        self.put(&layout::tree_image(app, tree), id.as_bytes()).await
    }

    pub async fn next_release_version(&self, app: &str) -> Result<u32, StoreError> {
        let last = self.releases(app).await?.last().map_or(0, |r| r.version);
        Ok(last + 1)
    }

    /// The release that is serving, if any.
    pub async fn current_release(&self, app: &str) -> Result<Option<Release>, StoreError> {
        match self.get_json::<u32>(&layout::current(app)).await? {
            Some(version) => self.release(app, version).await,
            None => Ok(None),
        }
    }

    /// Marks `release` as serving: saves it as succeeded and points `current` at it,
    /// in one transaction, which also makes `also` (the instance that serves
    /// it, a rollout request) and unpublishes every other instance of the
    /// app, so watchers (routers) never see one without the other: from
    /// that revision on, the new release alone is routed. Answers the
    /// addresses (`IP:PORT`) of the instances it unpublished.
    pub async fn promote_release(
        &self,
        app: &str,
        release: &Release,
        also: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<String>, StoreError> {
        let release_json = serde_json::to_vec(release).map_err(StoreError::Encode)?;
        let current_json = serde_json::to_vec(&release.version).map_err(StoreError::Encode)?;
        let mut writes =
            vec![(layout::release(app, release.version), release_json), (layout::current(app), current_json)];
        writes.extend(also);
        let unpublished: Pairs = self
            .list(&layout::instances(app))
            .await?
            .into_iter()
            .filter(|(key, _)| !writes.iter().any(|(written, _)| written == key))
            .collect();
        let deletes: Vec<String> = unpublished.iter().map(|(key, _)| key.clone()).collect();
        self.write_many(&writes, &deletes, None).await?;
        let unpublished = unpublished.iter().map(|(key, value)| (key.as_str(), value.as_slice()));
        Ok(instance_addresses(unpublished).into_values().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: u32, status: ReleaseStatus) -> Release {
        Release {
            version,
            commit: "c".repeat(40),
            image: format!("nap/app:v{version}"),
            created_at: OffsetDateTime::UNIX_EPOCH,
            status,
            cause: ReleaseCause::Push { key: "alice".into() },
            port: 5000,
            config: BTreeMap::new(),
            workload: None,
            restarts: 0,
            url: None,
            error: None,
            procfile: None,
            app_json: None,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn releases_are_numbered_listed_in_order_and_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_embedded(&dir.path().join("state.db")).unwrap();
        assert_eq!(store.next_release_version("app").await.unwrap(), 1);
        for version in 1..=10 {
            store.save_release("app", &release(version, ReleaseStatus::Pending)).await.unwrap();
        }
        // Zero-padded keys keep v10 after v9.
        let versions: Vec<u32> = store.releases("app").await.unwrap().iter().map(|r| r.version).collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>());
        assert_eq!(store.next_release_version("app").await.unwrap(), 11);
        assert_eq!(store.current_release("app").await.unwrap(), None);
        store.promote_release("app", &release(9, ReleaseStatus::Succeeded), Vec::new()).await.unwrap();
        let current = store.current_release("app").await.unwrap().unwrap();
        assert_eq!((current.version, current.status), (9, ReleaseStatus::Succeeded));
    }
}
