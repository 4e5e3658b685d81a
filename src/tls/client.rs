//! The client side of TLS, toward upstreams: one `rustls::ClientConfig` per
//! upstream per snapshot, with its trust roots, optional client
//! certificate, and a session cache so that new pooled connections resume
//! instead of running full handshakes.

use super::server::CertFiles;
use super::{load_certs, load_roots, provider, FileError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::path::PathBuf;
use std::sync::Arc;

/// What an upstream's `tls` table asks for, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The name sent as SNI and verified; absent: the server's host name
    /// as written in `servers` (none for a bare address).
    pub sni: Option<String>,
    /// Trust roots; absent: the system's.
    pub ca: Option<PathBuf>,
    /// Verify the server's certificate (on unless turned off, loudly).
    pub verify: bool,
    /// A client certificate to present (mTLS to the backend).
    pub client_cert: Option<CertFiles>,
}

/// An upstream's TLS settings, ready for connections.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Shared by the upstream's connections on every worker.
    pub config: Arc<ClientConfig>,
    /// `sni` from the config, checked as a name.
    pub sni: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// The name to send and verify for a server written as `host`.
    pub fn server_name(&self, host: &str) -> ServerName<'static> {
        if let Some(name) = &self.sni {
            return name.clone();
        }
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).unwrap_or_else(|_| ServerName::try_from("invalid").expect("a valid name"))
    }
}

/// Builds an upstream's TLS settings; every failure names its file.
pub fn upstream_tls(files: &ClientTlsFiles, config_file: &std::path::Path) -> Result<UpstreamTls, FileError> {
    let sni = files
        .sni
        .as_ref()
        .map(|s| {
            ServerName::try_from(s.clone())
                .map_err(|_| FileError::new(config_file, format!("`{s}` is not a valid TLS server name")))
        })
        .transpose()?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| FileError::new(config_file, e.to_string()))?;
    let builder = if files.verify {
        let roots = match &files.ca {
            Some(ca) => load_roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification))
    };
    let mut config = match &files.client_cert {
        Some(c) => {
            let chain = load_certs(&c.cert)?;
            let key = PrivateKeyDer::from_pem_file(&c.key)
                .map_err(|e| FileError::new(&c.key, format!("no private key: {}", super::pem_reason(e))))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| FileError::new(&c.key, format!("unusable: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(UpstreamTls { config: Arc::new(config), sni })
}

/// The system's trust roots (`/etc/ssl/certs` and the like).
fn system_roots() -> Result<RootCertStore, FileError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map_or("none found".to_owned(), |e| e.to_string());
        return Err(FileError::new(std::path::Path::new("/etc/ssl/certs"), format!("no system trust roots: {why}")));
    }
    Ok(roots)
}

/// `verify = false`: any certificate is accepted (signatures are still
/// checked, so the handshake itself stays sound).
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
