//! Where the store is and how to reach it: the settings that `nap` and the
//! static `nap-watch` share, defined once as flags, `NAP_*` variables and
//! nap.toml keys (`nap` flattens them into its own settings).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{EtcdOptions, Store, StoreError};

/// Where nap keeps its data unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nap";

#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Where nap keeps repos, state and its host key [default: /var/lib/nap]
    #[arg(long, global = true, env = "NAP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where state lives: embedded (under the data directory) or etcd://HOST:PORT[,HOST:PORT...]
    #[arg(long, global = true, env = "NAP_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// etcd user (its password: NAP_STORE_PASSWORD or `store_password` in nap.toml)
    #[arg(long, global = true, env = "NAP_STORE_USER", value_name = "USER")]
    pub store_user: Option<String>,
    /// etcd password; better in NAP_STORE_PASSWORD or nap.toml than on a command line
    #[arg(long, global = true, env = "NAP_STORE_PASSWORD", value_name = "PASSWORD", hide = true)]
    pub store_password: Option<Secret>,
    /// etcd CA certificate (PEM): talk TLS to etcd
    #[arg(long, global = true, env = "NAP_STORE_CA", value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// etcd client certificate (PEM)
    #[arg(long, global = true, env = "NAP_STORE_CERT", value_name = "FILE")]
    pub store_cert: Option<PathBuf>,
    /// etcd client key (PEM)
    #[arg(long, global = true, env = "NAP_STORE_KEY", value_name = "FILE")]
    pub store_key: Option<PathBuf>,
}

impl StoreSettings {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into())
    }

    /// The etcd cluster to use; `None`: the embedded store.
    pub fn etcd(&self) -> Result<Option<EtcdOptions>, StoreError> {
        let Some(url) = self.store.as_deref().filter(|s| *s != "embedded") else { return Ok(None) };
        Ok(Some(EtcdOptions {
            user: self.store_user.clone(),
            password: self.store_password.as_ref().map(|p| p.expose().to_owned()),
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
            ..EtcdOptions::from_url(url)?
        }))
    }

    /// Opens the store: etcd, or the embedded one at `DATA_DIR/state.db`
    /// (making the data directory if need be).
    pub async fn open(&self) -> Result<Store, StoreError> {
        if let Some(etcd) = self.etcd()? {
            return Store::open_etcd(&etcd).await;
        }
        let dir = self.data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir { dir: dir.clone(), source })?;
        Store::open_embedded(&dir.join("state.db"))
    }
}

/// A password or token: shown as `********` in logs and debug output, so
/// it never reaches them; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("********")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}
