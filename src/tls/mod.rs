//! TLS: terminating it on listeners (`server.rs`), speaking it to upstreams
//! (`client.rs`), and the stream both sides read and write through
//! (`stream.rs`, our own adapter over rustls, with the `ring` provider).
//! Certificates are read and checked when a config loads, so a bad file
//! fails `check` or a reload with its name, and a running snapshot never
//! holds a half-loaded certificate.

pub mod client;
mod halves;
pub mod server;
mod stream;
#[cfg(test)]
mod tests;

pub use halves::{TlsReadHalf, TlsWriteHalf};
pub use stream::{rustls_error, TlsStream, HANDSHAKE_MAX_BYTES};

use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The oldest TLS version a listener offers (`min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A certificate, key or CA file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

impl FileError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        FileError { path: path.to_path_buf(), message: message.into() }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// The crypto provider every TLS config uses: `ring` (no cmake needed to
/// build it), with rustls's safe default cipher suites and groups.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `min_version = "1.3"`.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => TLS13_ONLY,
    }
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item of that kind in the file".to_owned(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| FileError::new(path, pem_reason(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| FileError::new(path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(FileError::new(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A CA bundle as trust roots.
fn load_roots(path: &Path) -> Result<RootCertStore, FileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| FileError::new(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The TLS version as the access log and metrics write it.
pub fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "-",
    }
}

/// Why a handshake failed, as a metrics label: a small fixed set, so a
/// hostile client cannot grow the label space.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription as A, Error as E};
    if let Some(e) = rustls_error(e) {
        return match e {
            E::NoApplicationProtocol => "alpn",
            E::NoCertificatesPresented | E::InvalidCertificate(_) => "client_certificate",
            E::PeerIncompatible(_) => "incompatible",
            E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
                "malformed"
            }
            E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => "rejected_by_client",
            E::AlertReceived(_) => "alert_received",
            E::General(m) if m.contains("no server certificate") => "unknown_sni",
            _ => "other",
        };
    }
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timeout",
        std::io::ErrorKind::UnexpectedEof => "closed",
        std::io::ErrorKind::InvalidData => "too_large",
        _ => "io",
    }
}
