//! Certificates: a PEM bundle read into one (what `certs add` checks and
//! stores, what ACME orders), and a stored one read back into what the
//! router serves ([`super::sni`] picks one per handshake).

use std::sync::Arc;

use nap_state::{CertSource, Certificate};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the PEM input (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("no private key in the PEM input (expected -----BEGIN PRIVATE KEY-----, RSA or EC)")]
    NoKey,
    #[error("the PEM input is not valid: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("the certificate cannot be read: {0}")]
    Parse(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the private key is not usable: {0}")]
    Key(#[source] rustls::Error),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate names no DNS host")]
    NoNames,
}

/// A certificate chain and its key, checked: the key signs for the leaf.
pub struct Bundle {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after: OffsetDateTime,
}

impl Bundle {
    /// Reads `chain` (certificates, leaf first) and `key` (PEM); both may
    /// be one text, as `certs add` takes them.
    pub fn parse(chain: &str, key: &str) -> Result<Bundle, CertError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().map_err(CertError::Pem)?;
        let Some(leaf) = certs.first() else { return Err(CertError::NoCertificate) };
        let key = match PrivateKeyDer::from_pem_slice(key.as_bytes()) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => return Err(CertError::NoKey),
            Err(err) => return Err(CertError::Pem(err)),
        };
        let (_, x509) = X509Certificate::from_der(leaf).map_err(CertError::Parse)?;
        let mut names: Vec<String> = x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            names.extend(
                x509.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase),
            );
        }
        if names.is_empty() {
            return Err(CertError::NoNames);
        }
        let issuer = x509
            .issuer()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().map(str::to_owned))
            .unwrap_or_else(|| x509.issuer().to_string());
        let not_after = x509.validity().not_after.to_datetime();
        let bundle = Bundle { chain: certs, key, names, issuer, not_after };
        bundle.certified_key()?;
        Ok(bundle)
    }

    /// What the router serves.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&self.key).map_err(CertError::Key)?;
        let certified = CertifiedKey::new(self.chain.clone(), signer);
        match certified.keys_match() {
            Ok(()) => Ok(Arc::new(certified)),
            Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::KeyMismatch),
            Err(err) => Err(CertError::Key(err)),
        }
    }

    /// The record the store keeps of it, PEM.
    pub fn record(&self, chain_pem: &str, key_pem: &str, source: CertSource) -> Certificate {
        Certificate {
            chain: chain_pem.to_owned(),
            key: key_pem.to_owned().into(),
            source,
            issuer: self.issuer.clone(),
            names: self.names.clone(),
            not_after: self.not_after,
            added_at: OffsetDateTime::now_utc(),
        }
    }
}

/// Splits a PEM text into its certificates and its private key, each as
/// PEM; anything else in it (comments, parameters) is dropped.
pub fn split_pem(text: &str) -> (String, String) {
    let (mut certs, mut key) = (String::new(), String::new());
    let mut inside: Option<bool> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            inside = Some(label.ends_with("PRIVATE KEY"));
        }
        match inside {
            Some(true) => key.push_str(line),
            Some(false) => certs.push_str(line),
            None => continue,
        }
        let target = if inside == Some(true) { &mut key } else { &mut certs };
        target.push('\n');
        if line.starts_with("-----END ") {
            inside = None;
        }
    }
    (certs, key)
}

/// Reads a stored certificate back into what the router serves.
pub fn certified_key(cert: &Certificate) -> Result<Arc<CertifiedKey>, CertError> {
    Bundle::parse(&cert.chain, cert.key.expose())?.certified_key()
}
