//! An HTTP/2 client over TLS (the `h2` crate on rustls) for the router's
//! tests: it sends what curl never does (a `Host` beside `:authority`, two
//! `Host`s) and can shut its flow-control window.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A TLS client that trusts `cert` (a [`crate::tls::self_signed_leaf`]) and
/// asks for HTTP/2.
pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(cert).expect("the certificate")).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// An HTTP/2 connection to the router at `addr`, with SNI `host`, its
/// flow-control window `window` bytes (`None`: h2's default); answers the
/// client and the task that drives the connection (which ends with it).
pub async fn connect(
    addr: &str,
    host: &str,
    cert: &Path,
    window: Option<u32>,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let connector = tokio_rustls::TlsConnector::from(tls_config(cert));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).expect("a server name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (client, connection) = builder.handshake(tls).await.expect("HTTP/2 handshake");
    (client, tokio::spawn(connection))
}

/// A GET of `https://HOST/` over `client`, with these extra headers
/// (`host` among them, if the test wants it): the answer, its body not yet
/// read (dropping it resets the request).
pub async fn get(
    client: &mut h2::client::SendRequest<Bytes>,
    host: &str,
    headers: &[(&str, &str)],
) -> http::Response<h2::RecvStream> {
    let mut request = http::Request::get(format!("https://{host}/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (answer, _) = client.send_request(request.body(()).expect("a request"), true).expect("send");
    answer.await.expect("an answer")
}

/// The status of [`get`]'s answer.
pub async fn get_status(client: &mut h2::client::SendRequest<Bytes>, host: &str, headers: &[(&str, &str)]) -> u16 {
    get(client, host, headers).await.status().as_u16()
}
