//! The app model: an app exists once it has a record; its config is the
//! environment its next release gets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Release, Store, StoreError, layout};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The key (or `admin`) that created it, by `apps create` or a first push.
    pub created_by: String,
}

/// An app with what is known of its releases, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    #[serde(flatten)]
    pub record: AppRecord,
    pub current: Option<Release>,
}

/// How an app came to have a host: claimed, or given by an admin (a name
/// only admins may give, such as `*.DOMAIN`). The value of its key under
/// `/nap/apps/APP/domains/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainGrant {
    Claim,
    Admin,
}

/// The value that marks an admin's grant.
pub const ADMIN_GRANT: &[u8] = b"admin";

impl DomainGrant {
    fn value(self) -> &'static [u8] {
        match self {
            DomainGrant::Claim => b"",
            DomainGrant::Admin => ADMIN_GRANT,
        }
    }

    /// Reads a domain key's value.
    pub fn of(value: &[u8]) -> DomainGrant {
        if value == ADMIN_GRANT { DomainGrant::Admin } else { DomainGrant::Claim }
    }
}

impl Store {
    pub async fn app(&self, app: &str) -> Result<Option<AppRecord>, StoreError> {
        self.get_json(&layout::app_record(app)).await
    }

    /// Records a new app; answers false if it already existed.
    pub async fn create_app(&self, record: &AppRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_vec(record).map_err(StoreError::Encode)?;
        self.compare_and_swap(&layout::app_record(&record.name), None, &json).await
    }

    /// Every app with its serving release, in name order, from one read.
    pub async fn apps(&self) -> Result<Vec<AppSummary>, StoreError> {
        let mut records = BTreeMap::new();
        let mut current = BTreeMap::new();
        let mut releases = BTreeMap::new();
        for (key, value) in self.list(&layout::apps()).await? {
            let Some(rest) = key.strip_prefix(&layout::apps()) else { continue };
            let Some((name, field)) = rest.split_once('/') else { continue };
            let decode = |what| StoreError::Decode { key: key.clone(), source: what };
            if field == "app" {
                records.insert(name.to_owned(), serde_json::from_slice::<AppRecord>(&value).map_err(decode)?);
            } else if field == "current" {
                current.insert(name.to_owned(), serde_json::from_slice::<u32>(&value).map_err(decode)?);
            } else if field.starts_with("releases/") {
                releases.insert(key.clone(), value);
            }
        }
        let mut apps = Vec::with_capacity(records.len());
        for (name, record) in records {
            let current = match current.get(&name) {
                Some(version) => releases
                    .get(&layout::release(&name, *version))
                    .map(|bytes| serde_json::from_slice::<Release>(bytes))
                    .transpose()
                    .map_err(|source| StoreError::Decode { key: layout::release(&name, *version), source })?,
                None => None,
            };
            apps.push(AppSummary { record, current });
        }
        Ok(apps)
    }

    /// Forgets everything about the app.
    /// Removes everything about `app`, the hosts and the subnet it claimed included.
    pub async fn destroy_app(&self, app: &str) -> Result<(), StoreError> {
        for host in self.domains(app).await? {
            let claim = layout::domain_claim(&host);
            if self.get(&claim).await?.as_deref() == Some(app.as_bytes()) {
                self.delete(&claim).await?;
            }
        }
        self.release_subnets(app).await?;
        self.delete_prefix(&layout::app(app)).await.map(|_| ())
    }

    /// The hosts `app` answers at besides `APP.DOMAIN`.
    pub async fn domains(&self, app: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.domain_grants(app).await?.into_iter().map(|(host, _)| host).collect())
    }

    /// The hosts `app` answers at besides `APP.DOMAIN`, each with how it
    /// came to have it.
    pub async fn domain_grants(&self, app: &str) -> Result<Vec<(String, DomainGrant)>, StoreError> {
        let prefix = layout::app_domains(app);
        Ok(self
            .list(&prefix)
            .await?
            .into_iter()
            .map(|(key, value)| (key[prefix.len()..].to_owned(), DomainGrant::of(&value)))
            .collect())
    }

    /// The app that claimed `host` (`domains add`), if any.
    pub async fn domain_owner(&self, host: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(&layout::domain_claim(host)).await?.map(|owner| String::from_utf8_lossy(&owner).into_owned()))
    }

    /// Claims `host` for `app`; answers the app that holds it if another
    /// does. `grant` marks a name only an admin may give ([`ADMIN_GRANT`]).
    pub async fn add_domain(&self, app: &str, host: &str, grant: DomainGrant) -> Result<Option<String>, StoreError> {
        let claim = layout::domain_claim(host);
        if !self.compare_and_swap(&claim, None, app.as_bytes()).await? {
            let owner = self.domain_owner(host).await?;
            if owner.as_deref() != Some(app) {
                return Ok(Some(owner.unwrap_or_default()));
            }
        }
        self.put(&layout::app_domain(app, host), grant.value()).await?;
        Ok(None)
    }

    /// Takes `host` from `from`, which claimed it before it was `app`'s to
    /// have (a name nap now keeps for `app`), and gives it to `app`; answers
    /// false if `from` no longer held it.
    pub async fn take_domain(&self, app: &str, host: &str, from: &str) -> Result<bool, StoreError> {
        let claim = layout::domain_claim(host);
        if !self.compare_and_swap(&claim, Some(from.as_bytes()), app.as_bytes()).await? {
            return Ok(false);
        }
        self.delete(&layout::app_domain(from, host)).await?;
        self.put(&layout::app_domain(app, host), DomainGrant::Claim.value()).await?;
        Ok(true)
    }

    /// Lets `host` go; answers whether `app` had it.
    pub async fn remove_domain(&self, app: &str, host: &str) -> Result<bool, StoreError> {
        let claim = layout::domain_claim(host);
        let had = self.delete(&layout::app_domain(app, host)).await?;
        if self.get(&claim).await?.as_deref() == Some(app.as_bytes()) {
            self.delete(&claim).await?;
        }
        Ok(had)
    }

    pub async fn config(&self, app: &str) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.get_json(&layout::config(app)).await?.unwrap_or_default())
    }

    pub async fn save_config(&self, app: &str, config: &BTreeMap<String, String>) -> Result<(), StoreError> {
        self.put_json(&layout::config(app), config).await
    }

    /// The app's limits (the runner's `Limits`; the store only keeps them).
    pub async fn limits<T: serde::de::DeserializeOwned + Default>(&self, app: &str) -> Result<T, StoreError> {
        Ok(self.get_json(&layout::limits(app)).await?.unwrap_or_default())
    }

    pub async fn save_limits<T: Serialize>(&self, app: &str, limits: &T) -> Result<(), StoreError> {
        self.put_json(&layout::limits(app), limits).await
    }

    /// Counts one more crash of the app's instance `container`; answers
    /// the count.
    pub async fn count_crash(&self, app: &str, container: &str) -> Result<u32, StoreError> {
        let key = layout::crash_count(app, container);
        let count = self.get_json::<u32>(&key).await?.unwrap_or(0).saturating_add(1);
        self.put_json(&key, &count).await?;
        Ok(count)
    }

    /// How many times each instance of the app crashed, by container.
    pub async fn crashes(&self, app: &str) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let prefix = layout::crashes(app);
        let pairs = self.list(&prefix).await?;
        Ok(pairs
            .into_iter()
            .filter_map(|(key, value)| {
                let container = key.strip_prefix(&prefix)?.to_owned();
                Some((container, serde_json::from_slice(&value).ok()?))
            })
            .collect())
    }

    /// The app's formation (the runner's `Formation`; the store only keeps it).
    pub async fn formation<T: serde::de::DeserializeOwned + Default>(&self, app: &str) -> Result<T, StoreError> {
        Ok(self.get_json(&layout::formation(app)).await?.unwrap_or_default())
    }

    pub async fn save_formation<T: Serialize>(&self, app: &str, formation: &T) -> Result<(), StoreError> {
        self.put_json(&layout::formation(app), formation).await
    }

    /// The app's placement constraints (the swarm runner's; the store only
    /// keeps them).
    pub async fn placement<T: serde::de::DeserializeOwned + Default>(&self, app: &str) -> Result<T, StoreError> {
        Ok(self.get_json(&layout::placement(app)).await?.unwrap_or_default())
    }

    pub async fn save_placement<T: Serialize>(&self, app: &str, placement: &T) -> Result<(), StoreError> {
        self.put_json(&layout::placement(app), placement).await
    }
}
