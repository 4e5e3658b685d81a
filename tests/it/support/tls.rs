//! TLS helpers: certificates made at run time with rcgen (a CA, server
//! leaves with chosen names, client certificates), a directory that holds
//! them next to the proxy's config (so relative paths resolve there), a
//! blocking rustls client (`tls/client.rs`), the handshake counters off
//! `/metrics`, and `curl`/`openssl` when they are installed.

mod client;

pub use client::*;

use super::ops::admin_get;
use super::{runtime_config, unique_temp_path, Proxy};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rcgen::{KeyUsagePurpose, SerialNumber};
use rustls::pki_types::CertificateDer;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use rustls::version::{TLS12, TLS13};
pub use rustls::{AlertDescription, ProtocolVersion};

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A certificate authority (ECDSA P-256).
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate issued by a `Ca`, with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for the DNS names `names`, subject `CN=cn`.
    pub fn server(&self, cn: &str, names: &[&str], serial: u64) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("names");
        params.distinguished_name = dn(cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate, subject `CN=cn`.
    pub fn client(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.serial_number = Some(SerialNumber::from(7u64));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    /// A rustls server config presenting this certificate (for test
    /// backends that speak TLS themselves).
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![self.der.clone()], key)
                .expect("server config");
        std::sync::Arc::new(config)
    }
}

/// A temp directory for certificates and the config, removed on drop.
pub struct CertDir {
    pub path: PathBuf,
}

impl CertDir {
    pub fn new(stem: &str) -> CertDir {
        let path = unique_temp_path(stem, ".d");
        std::fs::create_dir_all(&path).expect("create cert dir");
        CertDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `name` atomically (aside, then renamed), so that a reload
    /// never reads half a file.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        let tmp = self.join(&format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).expect("write cert file");
        std::fs::rename(&tmp, self.join(name)).expect("rename cert file");
    }

    /// Writes `STEM.pem` and `STEM.key`.
    pub fn install(&self, stem: &str, c: &Issued) {
        self.write(&format!("{stem}.pem"), &c.cert_pem);
        self.write(&format!("{stem}.key"), &c.key_pem);
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A config: `[timeouts]` overrides, an admin listener, upstream `all` =
/// `backend`, and listener `https` (`/` to `all`, `/admin` answering 403)
/// with `tls = { TLS }`; `more` appended.
pub fn https_config(threads: usize, timeouts: &[(&str, &str)], backend: SocketAddr, tls: &str, more: &str) -> String {
    https_config_on("127.0.0.1:0", threads, timeouts, backend, tls, more)
}

/// `https_config` with listener `https` bound to `bind`.
pub fn https_config_on(
    bind: &str,
    threads: usize,
    timeouts: &[(&str, &str)],
    backend: SocketAddr,
    tls: &str,
    more: &str,
) -> String {
    format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.all]
servers = ["{backend}"]

[[listeners]]
name = "https"
bind = "{bind}"
routes = [ {{ prefix = "/", upstream = "all" }}, {{ prefix = "/admin", status = 403 }} ]
tls = {{ {tls} }}
{more}"#,
        header = runtime_config(threads, timeouts, &[]),
    )
}

/// One series' value on `/metrics` (0 when absent).
pub fn metric(p: &Proxy, series: &str) -> f64 {
    let text = admin_get(p, "/metrics").text();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Waits (bounded) until `series` reads `want`; the counters are bumped
/// right after the client sees the handshake end.
pub fn wait_metric(p: &Proxy, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric(p, series);
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            let all = admin_get(p, "/metrics").text();
            let tls: Vec<&str> = all.lines().filter(|l| l.starts_with("ringway_tls")).collect();
            panic!("{series} is {got}, expected {want}; TLS series:\n{}", tls.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn handshakes(listener: &str, version: &str) -> String {
    format!("ringway_tls_handshakes_total{{listener=\"{listener}\",version=\"{version}\"}}")
}

pub fn failures(listener: &str, reason: &str) -> String {
    format!("ringway_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// Runs an external tool (killed after 20 s); `None` when it is not
/// installed, so the caller skips its asserts.
pub fn tool(program: &str, args: &[&str], stdin: &[u8]) -> Option<Output> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("{program} is not installed: its checks are skipped");
            return None;
        }
        Err(e) => panic!("spawn {program}: {e}"),
    };
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(child.wait_with_output().expect("tool output"))
}

/// `curl` over HTTPS to `name:port` (resolved to 127.0.0.1), trusting
/// `ca`; `None` without curl.
pub fn curl(ca: &Path, name: &str, port: u16, extra: &[&str], urls: &[&str]) -> Option<Output> {
    let ca = ca.to_str().expect("utf-8 path");
    let resolve = format!("{name}:{port}:127.0.0.1");
    let mut args = vec!["-sS", "--max-time", "10", "--cacert", ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    let urls: Vec<String> = urls.iter().map(|u| format!("https://{name}:{port}{u}")).collect();
    args.extend(urls.iter().map(String::as_str));
    tool("curl", &args, b"")
}

/// `openssl s_client` to `addr` with `args`, stdin closed at once (it
/// shakes hands, prints the session and leaves); stdout and stderr joined.
pub fn s_client(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let connect = addr.to_string();
    let mut all = vec!["s_client", "-connect", &connect];
    all.extend_from_slice(args);
    let out = tool("openssl", &all, b"")?;
    Some(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
