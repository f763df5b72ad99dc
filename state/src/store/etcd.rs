//! The etcd backend: the same keys in an etcd v3 cluster, so that several
//! hosts share one state. Every call is bounded in time: an unreachable
//! cluster is an error naming its endpoints, never a hang.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::{Pairs, StoreError, WatchEvent, WatchStream};

/// How long connecting, and then any one call, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the cluster: `etcd://HOST:PORT[,HOST:PORT...]` plus credentials and TLS.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM files: the cluster's CA, and this client's certificate and key.
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl EtcdOptions {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn from_url(url: &str) -> Result<EtcdOptions, StoreError> {
        let invalid = || StoreError::InvalidSpec(url.to_owned());
        let hosts = url.strip_prefix("etcd://").ok_or_else(invalid)?;
        let endpoints: Vec<String> = hosts.split(',').map(str::trim).map(str::to_owned).collect();
        if endpoints.iter().any(|e| e.is_empty() || !e.contains(':') || e.contains('/')) {
            return Err(invalid());
        }
        Ok(EtcdOptions { endpoints, ..Default::default() })
    }

    fn shown(&self) -> String {
        self.endpoints.join(",")
    }
}

#[derive(Clone)]
pub(super) struct Etcd {
    client: Client,
    endpoints: String,
}

impl Etcd {
    pub(super) async fn connect(options: &EtcdOptions) -> Result<Etcd, StoreError> {
        let endpoints = options.shown();
        let scheme = if options.ca.is_some() { "https" } else { "http" };
        let urls: Vec<String> = options.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let mut connect = ConnectOptions::new().with_connect_timeout(TIMEOUT).with_timeout(TIMEOUT);
        if let (Some(user), Some(password)) = (&options.user, &options.password) {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(ca) = &options.ca {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|source| StoreError::EtcdPem {
                    endpoints: endpoints.clone(),
                    path: path.to_owned(),
                    source,
                })
            };
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&options.cert, &options.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            connect = connect.with_tls(tls);
        }
        let client = bounded(&endpoints, Client::connect(urls, Some(connect))).await?;
        let etcd = Etcd { client, endpoints };
        // Connecting is lazy for some failures; one read proves the cluster answers.
        etcd.get("/nap/").await?;
        Ok(etcd)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(&self.endpoints, client.get(key, None)).await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Puts `pairs` (bound to `lease`, if any) and deletes `deletes` in one
    /// transaction, so at one revision.
    pub(super) async fn write_many(
        &self,
        pairs: &[(&str, &[u8])],
        deletes: &[&str],
        lease: Option<i64>,
    ) -> Result<(), StoreError> {
        let options = lease.map(|lease| PutOptions::new().with_lease(lease));
        let mut ops: Vec<TxnOp> = pairs.iter().map(|(k, v)| TxnOp::put(*k, *v, options.clone())).collect();
        ops.extend(deletes.iter().map(|key| TxnOp::delete(*key, None)));
        let mut client = self.client.clone();
        match (bounded(&self.endpoints, client.txn(Txn::new().and_then(ops))).await, lease) {
            (Err(StoreError::Etcd { source, .. }), Some(lease)) if lease_not_found(&source) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            (result, _) => result.map(|_| ()),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let options = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Ascend);
        let mut client = self.client.clone();
        let response = bounded(&self.endpoints, client.get(prefix, Some(options))).await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()))
            .collect())
    }

    /// Every key under each prefix, read in one transaction, so at one revision.
    pub(super) async fn snapshot(&self, prefixes: &[String]) -> Result<(Pairs, i64), StoreError> {
        let ops: Vec<TxnOp> =
            prefixes.iter().map(|prefix| TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix()))).collect();
        let mut client = self.client.clone();
        let response = bounded(&self.endpoints, client.txn(Txn::new().and_then(ops))).await?;
        let revision = response.header().map_or(0, etcd_client::ResponseHeader::revision);
        let mut pairs = Vec::new();
        for op in response.op_responses() {
            if let TxnOpResponse::Get(got) = op {
                pairs.extend(
                    got.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())),
                );
            }
        }
        Ok((pairs, revision))
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut client = self.client.clone();
        Ok(bounded(&self.endpoints, client.delete(key, None)).await?.deleted() > 0)
    }

    pub(super) async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut client = self.client.clone();
        let response =
            bounded(&self.endpoints, client.delete(prefix, Some(DeleteOptions::new().with_prefix()))).await?;
        Ok(u64::try_from(response.deleted()).unwrap_or(0))
    }

    pub(super) async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<bool, StoreError> {
        let compare = match expected {
            // Version 0: the key does not exist.
            None => Compare::version(key, CompareOp::Equal, 0),
            Some(expected) => Compare::value(key, CompareOp::Equal, expected),
        };
        let options = lease.map(|lease| PutOptions::new().with_lease(lease));
        let txn = Txn::new().when([compare]).and_then([TxnOp::put(key, value, options)]);
        let mut client = self.client.clone();
        let response = bounded(&self.endpoints, client.txn(txn)).await;
        match (response, lease) {
            (Err(StoreError::Etcd { source, .. }), Some(lease)) if lease_not_found(&source) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            (response, _) => Ok(response?.succeeded()),
        }
    }

    pub(super) async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        Ok(bounded(&self.endpoints, client.lease_grant(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX), None))
            .await?
            .id())
    }

    pub(super) async fn keep_lease_alive(&self, lease: i64) -> Result<(), StoreError> {
        let not_found = |err: StoreError| match err {
            StoreError::Etcd { source, .. } if lease_not_found(&source) => StoreError::LeaseNotFound(lease),
            err => err,
        };
        let mut client = self.client.clone();
        let (mut keeper, mut responses) =
            bounded(&self.endpoints, client.lease_keep_alive(lease)).await.map_err(not_found)?;
        bounded(&self.endpoints, keeper.keep_alive()).await.map_err(not_found)?;
        match bounded(&self.endpoints, responses.message()).await.map_err(not_found)? {
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    pub(super) async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        match bounded(&self.endpoints, client.lease_revoke(lease)).await {
            Err(StoreError::Etcd { source, .. }) if lease_not_found(&source) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Compacts etcd's history up to `revision` (physically): older values
    /// can no longer be read or watched.
    pub(super) async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        let options = etcd_client::CompactionOptions::new().with_physical();
        match bounded(&self.endpoints, client.compact(revision, Some(options))).await {
            // Someone compacted this far already.
            Err(StoreError::Etcd { source, .. }) if already_compacted(&source) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn revision(&self) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        let response = bounded(&self.endpoints, client.get("/", Some(GetOptions::new().with_count_only()))).await?;
        Ok(response.header().map_or(0, etcd_client::ResponseHeader::revision))
    }

    pub(super) async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream, StoreError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = bounded(&self.endpoints, client.watch(prefix, Some(options))).await?;
        let endpoints = self.endpoints.clone();
        let events = futures_util::stream::unfold(Some(stream), move |stream| {
            let endpoints = endpoints.clone();
            async move {
                let mut stream = stream?;
                loop {
                    let response = match stream.message().await {
                        Ok(Some(response)) => response,
                        Ok(None) => return None,
                        Err(err) => {
                            let err = StoreError::Etcd { endpoints, source: err };
                            return Some((Err(err), None));
                        }
                    };
                    if response.compact_revision() > 0 {
                        return Some((Err(StoreError::Compacted(response.compact_revision())), None));
                    }
                    if response.canceled() {
                        let reason = response.cancel_reason().to_owned();
                        return Some((Err(StoreError::WatchCanceled { endpoints, reason }), None));
                    }
                    let events: Vec<WatchEvent> = response
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kv = event.kv()?;
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            let revision = kv.mod_revision();
                            Some(match event.event_type() {
                                EventType::Put => WatchEvent::Put { key, value: kv.value().to_vec(), revision },
                                EventType::Delete => WatchEvent::Delete { key, revision },
                            })
                        })
                        .collect();
                    if !events.is_empty() {
                        return Some((Ok(events), Some(stream)));
                    }
                }
            }
        });
        Ok(Box::pin(events))
    }
}

/// Whether etcd answered that a lease does not exist (it expired or was revoked).
fn lease_not_found(err: &etcd_client::Error) -> bool {
    err.to_string().contains("lease not found")
}

/// etcd's answer to a compaction at or before the last one.
fn already_compacted(err: &etcd_client::Error) -> bool {
    err.to_string().contains("required revision has been compacted")
}

/// Runs one etcd call within [`TIMEOUT`], naming the endpoints on failure.
async fn bounded<T>(
    endpoints: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(StoreError::Etcd { endpoints: endpoints.to_owned(), source }),
        Err(_) => Err(StoreError::EtcdTimeout { endpoints: endpoints.to_owned(), seconds: TIMEOUT.as_secs() }),
    }
}
