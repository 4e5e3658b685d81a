//! The server side of TLS: a listener's `rustls::ServerConfig`, built once
//! per config snapshot from the certificate files, and the SNI certificate
//! choice (`SniResolver`). A reload builds a new one; connections keep the
//! config they shook hands with.

use super::{load_certs, load_roots, provider, versions, FileError, TlsVersion};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A certificate chain and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM: the leaf first, then intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// What a listener's `tls` table asks for, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The first is the default certificate.
    pub certificates: Vec<CertFiles>,
    /// Oldest version offered.
    pub min_version: TlsVersion,
    /// Refuse clients without SNI or with a name no certificate has.
    pub sni_strict: bool,
    /// Require client certificates signed by these roots.
    pub client_ca: Option<PathBuf>,
}

/// Builds the `ServerConfig`; every failure names its file.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, FileError> {
    let mut resolver = SniResolver { strict: files.sni_strict, ..SniResolver::default() };
    for c in &files.certificates {
        resolver.add(load_certified_key(c)?);
    }
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(files.min_version))
        .map_err(|e| FileError::new(&files.certificates[0].cert, e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| FileError::new(ca, format!("no usable CA certificate: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // HTTP/1.1 only until there is HTTP/2: a client that offers only `h2`
    // gets a `no_application_protocol` alert rather than a protocol it
    // would not get.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets, so that a client resumes on whichever worker the
    // kernel hands its next connection to.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| FileError::new(&files.certificates[0].cert, e.to_string()))?;
    // rustls never renegotiates; a client-initiated renegotiation gets
    // an alert by construction.
    Ok(Arc::new(config))
}

/// Loads a chain and its key, and checks that they belong together.
fn load_certified_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, FileError> {
    let chain = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| FileError::new(&files.key, format!("no private key: {}", super::pem_reason(e))))?;
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            FileError::new(&files.key, "does not match the certificate in its `cert`")
        }
        e => FileError::new(&files.key, format!("unusable key: {e}")),
    })?;
    Ok(Arc::new(key))
}

/// Chooses a certificate by the client's SNI name: exact names first, then
/// one-label wildcards (`*.example.com` covers `a.example.com`, not
/// `a.b.example.com` nor `example.com`); otherwise the first certificate,
/// or none when `strict`.
#[derive(Debug, Default)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    /// Lowercase DNS name → index in `certs` (the first certificate that
    /// lists the name wins).
    exact: HashMap<String, usize>,
    /// `example.com` for `*.example.com` → index in `certs`.
    wildcard: HashMap<String, usize>,
    strict: bool,
}

impl SniResolver {
    fn add(&mut self, key: Arc<CertifiedKey>) {
        let index = self.certs.len();
        for name in names_of(&key) {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()).or_insert(index),
                None => self.exact.entry(name).or_insert(index),
            };
        }
        self.certs.push(key);
    }

    /// The index of the certificate for `name` (`None`: no match).
    pub fn lookup(&self, name: &str) -> Option<usize> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|n| self.lookup(n));
        match chosen {
            Some(i) => Some(Arc::clone(&self.certs[i])),
            None if self.strict => None,
            None => self.certs.first().cloned(),
        }
    }
}

/// The DNS names a leaf certificate is valid for (its subject alternative
/// names), lowercased.
fn names_of(key: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = key.cert.first() else { return Vec::new() };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(ee) => ee.valid_dns_names().map(|n| n.to_ascii_lowercase()).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(names: &[&[&str]]) -> SniResolver {
        let mut r = SniResolver::default();
        for (i, set) in names.iter().enumerate() {
            for n in *set {
                match n.strip_prefix("*.") {
                    Some(p) => r.wildcard.entry(p.to_owned()).or_insert(i),
                    None => r.exact.entry((*n).to_owned()).or_insert(i),
                };
            }
        }
        r
    }

    #[test]
    fn exact_names_win_over_wildcards_and_wildcards_cover_one_label() {
        let r = resolver(&[&["example.com", "*.example.com"], &["api.example.com"], &["*.b.example.com"]]);
        assert_eq!(r.lookup("api.example.com"), Some(1));
        assert_eq!(r.lookup("API.Example.COM."), Some(1));
        assert_eq!(r.lookup("www.example.com"), Some(0));
        assert_eq!(r.lookup("example.com"), Some(0));
        assert_eq!(r.lookup("a.b.example.com"), Some(2));
        assert_eq!(r.lookup("x.a.example.com"), None, "one label only");
        assert_eq!(r.lookup("other.org"), None);
        assert_eq!(r.lookup(""), None);
    }
}
