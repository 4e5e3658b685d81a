//! Building the `tls` tables of listeners and upstreams. Certificate, key
//! and CA files are read and checked here, so `check` and a reload fail on
//! a missing file, a broken PEM or a key that does not match its
//! certificate, naming the file. Relative paths are relative to the
//! config file's directory.

use super::raw::{RawListenerTls, RawUpstreamTls};
use super::{Builder, ConfigError};
use crate::tls::client::{upstream_tls, ClientTlsFiles, UpstreamTls};
use crate::tls::server::{server_config, CertFiles, ServerTlsFiles};
use crate::tls::{FileError, TlsVersion};
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

/// A listener's TLS: what new handshakes use.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Certificates, versions, ALPN, client verification.
    pub server: Arc<rustls::ServerConfig>,
    /// Forward a verified client certificate's subject in this header.
    pub client_subject_header: Option<Arc<str>>,
}

impl Builder<'_> {
    fn path(&self, p: &Spanned<String>) -> PathBuf {
        let p = PathBuf::from(p.get_ref());
        match (p.is_relative(), self.source.parent()) {
            (true, Some(dir)) => dir.join(p),
            _ => p,
        }
    }

    /// The error for `e`, pointing at whichever of `spans` names its file.
    fn file_error(&self, e: FileError, spans: &[(&Spanned<String>, &str)], fallback: (usize, &str)) -> ConfigError {
        let at = spans.iter().find(|(s, _)| self.path(s) == e.path);
        let (offset, key) = at.map_or(fallback, |(s, k)| (s.span().start, k));
        ConfigError::at(self.source, self.text, Some(offset), Some(key), e.to_string())
    }

    pub(super) fn listener_tls(&self, t: &Spanned<RawListenerTls>) -> Result<ListenerTls, ConfigError> {
        let raw = t.get_ref();
        if raw.certificates.get_ref().is_empty() {
            return Err(self.err(&raw.certificates, "listeners.tls.certificates", "needs at least one certificate"));
        }
        let min_version = match raw.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => TlsVersion::Tls12,
            Some((_, "1.3")) => TlsVersion::Tls13,
            Some((v, _)) => {
                return Err(self.err(
                    v,
                    "listeners.tls.min_version",
                    "must be \"1.2\" or \"1.3\" (older versions are not offered)",
                ))
            }
        };
        let header = match &raw.client_subject_header {
            Some(h) if raw.client_ca.is_none() => {
                return Err(self.err(
                    h,
                    "listeners.tls.client_subject_header",
                    "needs `client_ca` (no client certificate is asked for without it)",
                ))
            }
            Some(h) if h.get_ref().is_empty() || !h.get_ref().bytes().all(is_token_byte) => {
                return Err(self.err(h, "listeners.tls.client_subject_header", "must be a header name"))
            }
            Some(h) if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(h.get_ref())) => {
                return Err(self.err(
                    h,
                    "listeners.tls.client_subject_header",
                    "names a field the proxy itself writes or that frames the request; choose a name of its own",
                ))
            }
            Some(h) => Some(Arc::from(h.get_ref().as_str())),
            None => None,
        };
        let files = ServerTlsFiles {
            certificates: raw
                .certificates
                .get_ref()
                .iter()
                .map(|c| CertFiles { cert: self.path(&c.get_ref().cert), key: self.path(&c.get_ref().key) })
                .collect(),
            min_version,
            sni_strict: raw.sni_strict,
            client_ca: raw.client_ca.as_ref().map(|c| self.path(c)),
        };
        let mut spans: Vec<(&Spanned<String>, &str)> = Vec::new();
        for c in raw.certificates.get_ref() {
            spans.push((&c.get_ref().cert, "listeners.tls.certificates.cert"));
            spans.push((&c.get_ref().key, "listeners.tls.certificates.key"));
        }
        if let Some(ca) = &raw.client_ca {
            spans.push((ca, "listeners.tls.client_ca"));
        }
        let server =
            server_config(&files).map_err(|e| self.file_error(e, &spans, (t.span().start, "listeners.tls")))?;
        Ok(ListenerTls { server, client_subject_header: header })
    }

    pub(super) fn upstream_tls(&self, t: &Spanned<RawUpstreamTls>, key: &str) -> Result<Arc<UpstreamTls>, ConfigError> {
        let raw = t.get_ref();
        let client_cert = match (&raw.cert, &raw.key) {
            (Some(c), Some(k)) => Some(CertFiles { cert: self.path(c), key: self.path(k) }),
            (None, None) => None,
            (Some(s), None) | (None, Some(s)) => {
                return Err(self.err(
                    s,
                    &format!("{key}.tls"),
                    "`cert` and `key` go together (a client certificate and its key)",
                ))
            }
        };
        let verify = raw.verify.unwrap_or(true);
        if !verify {
            self.warnings.borrow_mut().push(format!(
                "{key}.tls: verify = false: the upstream's certificate is NOT checked; anyone on the path can impersonate it"
            ));
        }
        let files = ClientTlsFiles {
            sni: raw.sni.as_ref().map(|s| s.get_ref().clone()),
            ca: raw.ca.as_ref().map(|c| self.path(c)),
            verify,
            client_cert,
        };
        let tls_key = format!("{key}.tls");
        let mut spans: Vec<(&Spanned<String>, &str)> = Vec::new();
        for (s, k) in [(&raw.ca, "ca"), (&raw.cert, "cert"), (&raw.key, "key")] {
            if let Some(s) = s {
                spans.push((s, k));
            }
        }
        let spans: Vec<(&Spanned<String>, String)> =
            spans.into_iter().map(|(s, k)| (s, format!("{tls_key}.{k}"))).collect();
        let spans: Vec<(&Spanned<String>, &str)> = spans.iter().map(|(s, k)| (*s, k.as_str())).collect();
        upstream_tls(&files, self.source)
            .map(Arc::new)
            .map_err(|e| self.file_error(e, &spans, (t.span().start, &tls_key)))
    }
}

/// Fields `client_subject_header` may not name: framing, hop-by-hop and
/// forwarding fields, whose second copy would confuse a backend.
const RESERVED_NAMES: [&str; 16] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "http2-settings",
    "cookie",
];

/// A byte allowed in a header name (RFC 9110 `tchar`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
