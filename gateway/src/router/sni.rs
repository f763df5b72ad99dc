//! The router's TLS settings: each handshake gets the certificate the
//! route table has for its server name (SNI), and HTTP/2 or HTTP/1.1 by
//! ALPN.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::table::RouteTable;

/// Picks the certificate for a handshake by its server name (SNI), from the
/// route table as it is now: the host's own, else its wildcard's.
struct SniResolver {
    table: Arc<RouteTable>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.table.routes().cert(&name).cloned()
    }
}

/// The router's TLS settings: certificates by SNI; HTTP/2 or HTTP/1.1 by ALPN.
pub fn server_config(table: Arc<RouteTable>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { table }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
