//! TLS toward upstreams (issue 14): a front ringway speaks TLS to a second
//! ringway that terminates it in front of a recording backend. Verification
//! with the right CA and refusal with a wrong one, pooled TLS connections
//! reused (one handshake for many requests), session resumption on new
//! connections, `verify = false`, and mTLS to the backend.

use crate::support::tls::{metric as metric_f64, Ca, CertDir};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A CA and the certificate files it signed, in a temp directory.
struct Pki {
    dir: CertDir,
    ca: Ca,
}

impl Pki {
    fn new(stem: &str) -> Pki {
        let dir = CertDir::new(stem);
        let ca = Ca::new(&format!("{stem} CA"));
        dir.write("ca.pem", ca.pem());
        Pki { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses),
    /// written as `{stem}.pem` and `{stem}.key`; returns their paths.
    fn leaf(&self, stem: &str, names: &[&str], cn: &str) -> (PathBuf, PathBuf) {
        self.dir.install(stem, &self.ca.server(cn, names, 2));
        (self.dir.join(&format!("{stem}.pem")), self.dir.join(&format!("{stem}.key")))
    }

    /// A client certificate with subject `CN=cn`.
    fn client(&self, stem: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.dir.install(stem, &self.ca.client(cn));
        (self.dir.join(&format!("{stem}.pem")), self.dir.join(&format!("{stem}.key")))
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The TLS-terminating "backend" ringway: `https` over `backend`, with an
/// admin listener for its handshake counters. `extra`: more of the `tls` table.
fn terminator(backend: &RecordingBackend, cert: &(PathBuf, PathBuf), extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
[runtime]
threads = 1
[admin]
bind = "127.0.0.1:0"
[upstreams.b]
servers = ["{}"]
[[listeners]]
name = "https"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "b" }} ]
tls = {{ certificates = [ {{ cert = "{}", key = "{}" }} ]{extra} }}
"#,
        backend.addr(),
        p(&cert.0),
        p(&cert.1)
    ))
}

/// The front ringway: plaintext `front` to the upstream `secure` at
/// `server` with the given `tls` table and `keepalive`.
fn front(server: std::net::SocketAddr, tls: &str, keepalive: usize) -> Proxy {
    Proxy::start(&format!(
        r#"
[runtime]
threads = 1
[admin]
bind = "127.0.0.1:0"
[upstreams.secure]
servers = ["{server}"]
keepalive = {keepalive}
max_fails = 0
tls = {tls}
[[listeners]]
name = "front"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "secure" }} ]
"#
    ))
}

/// One series' value on `/metrics` (0 when absent).
fn metric(p: &Proxy, series: &str) -> u64 {
    metric_f64(p, series) as u64
}

fn wait_metric(p: &Proxy, series: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(p, series);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn verified_with_the_right_ca_and_pooled_connections_are_reused() {
    let pki = Pki::new("up-ok");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], "server");
    let backend = RecordingBackend::start(|_| ok("behind tls"));
    let tls_side = terminator(&backend, &cert, "");
    let upstream = tls_side.addr("https");
    // Verified against the IP address in the certificate (no SNI for an IP).
    let f = front(upstream, &format!(r#"{{ ca = "{}" }}"#, p(&pki.ca_file())), 32);
    let mut client = Client::connect(f.addr("front"));
    for i in 0..20 {
        let r = client.get(&format!("/r{i}"));
        assert_eq!((r.status, r.text()), (200, "behind tls".to_string()), "request {i}");
    }
    assert_eq!(backend.wait_requests(20).len(), 20);
    let handshakes = wait_metric(&tls_side, "ringway_tls_handshakes_total{listener=\"https\",version=\"TLSv1.3\"}", 1);
    assert_eq!(handshakes, 1, "20 requests over one pooled TLS connection (the tickets it got did not spoil it)");
    // The name from `sni` is what is verified: `localhost` is in the certificate.
    let by_name = front(upstream, &format!(r#"{{ ca = "{}", sni = "localhost" }}"#, p(&pki.ca_file())), 32);
    assert_eq!(get(by_name.addr("front"), "/by-name").status, 200);
}

#[test]
fn a_certificate_from_another_ca_or_for_another_name_is_refused() {
    let pki = Pki::new("up-ok2");
    let other = Pki::new("up-other");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], "server");
    let backend = RecordingBackend::start(|_| ok("never"));
    let tls_side = terminator(&backend, &cert, "");
    let upstream = tls_side.addr("https");
    let wrong_ca = front(upstream, &format!(r#"{{ ca = "{}" }}"#, p(&other.ca_file())), 32);
    assert_eq!(get(wrong_ca.addr("front"), "/").status, 502);
    let wrong_name = front(upstream, &format!(r#"{{ ca = "{}", sni = "elsewhere.test" }}"#, p(&pki.ca_file())), 32);
    assert_eq!(get(wrong_name.addr("front"), "/").status, 502);
    assert!(backend.requests().is_empty(), "no request crossed an unverified connection");
    let refused = wait_metric(
        &tls_side,
        "ringway_tls_handshake_failures_total{listener=\"https\",reason=\"rejected_by_client\"}",
        2,
    );
    assert_eq!(refused, 2, "both handshakes ended with the front's alert");
    let failed = metric(
        &wrong_ca,
        &format!(
            "ringway_upstream_requests_total{{upstream=\"secure\",server=\"{upstream}\",outcome=\"connect_error\"}}"
        ),
    );
    assert_eq!(failed, 1, "an unverified server is a connect failure");
    // `verify = false` takes any certificate, with a warning at load.
    let blind = front(upstream, r#"{ verify = false }"#, 32);
    assert_eq!(get(blind.addr("front"), "/blind").status, 200);
    assert!(blind.wait_stderr("verify = false", Duration::from_secs(5)), "{}", blind.stderr());
}

#[test]
fn new_connections_resume_their_tls_session() {
    let pki = Pki::new("up-resume");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], "server");
    let backend = RecordingBackend::start(|_| ok("again"));
    let tls_side = terminator(&backend, &cert, "");
    // No pool: every request opens (and shakes hands on) a new connection.
    let f = front(tls_side.addr("https"), &format!(r#"{{ ca = "{}" }}"#, p(&pki.ca_file())), 0);
    for i in 0..8 {
        assert_eq!(get(f.addr("front"), &format!("/n{i}")).status, 200);
    }
    let total = wait_metric(&tls_side, "ringway_tls_handshakes_total{listener=\"https\",version=\"TLSv1.3\"}", 8);
    let resumed = metric(&tls_side, "ringway_tls_resumed_handshakes_total{listener=\"https\"}");
    assert_eq!(total, 8);
    assert!(resumed >= 6, "{resumed} of {total} handshakes resumed a session");
}

#[test]
fn mtls_to_the_backend_presents_the_configured_client_certificate() {
    let pki = Pki::new("up-mtls");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], "server");
    let client_cert = pki.client("front", "ringway-front");
    let backend = RecordingBackend::start(|_| ok("mtls"));
    let extra = format!(r#", client_ca = "{}", client_subject_header = "X-Client-Subject""#, p(&pki.ca_file()));
    let tls_side = terminator(&backend, &cert, &extra);
    let upstream = tls_side.addr("https");
    let with_cert = front(
        upstream,
        &format!(
            r#"{{ ca = "{}", cert = "{}", key = "{}" }}"#,
            p(&pki.ca_file()),
            p(&client_cert.0),
            p(&client_cert.1)
        ),
        32,
    );
    assert_eq!(get(with_cert.addr("front"), "/m").status, 200);
    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].header("x-client-subject").as_deref(), Some("CN=ringway-front"));
    assert_eq!(seen[0].header("x-forwarded-proto").as_deref(), Some("https"));
    let without = front(upstream, &format!(r#"{{ ca = "{}" }}"#, p(&pki.ca_file())), 32);
    assert_eq!(get(without.addr("front"), "/m").status, 502);
    assert_eq!(backend.requests().len(), 1, "the front without a certificate got nothing through");
    let refused = wait_metric(
        &tls_side,
        "ringway_tls_handshake_failures_total{listener=\"https\",reason=\"client_certificate\"}",
        1,
    );
    assert_eq!(refused, 1);
}

#[test]
fn active_health_checks_speak_tls() {
    let pki = Pki::new("up-health");
    let other = Pki::new("up-health-other");
    let cert = pki.leaf("server", &["localhost", "127.0.0.1"], "server");
    let backend = RecordingBackend::start(|_| ok("healthy"));
    let tls_side = terminator(&backend, &cert, "");
    let upstream = tls_side.addr("https");
    // `front` writes `tls = ...` last in the upstream table: the check rides on the next line.
    let check = "\nhealth_check = { path = \"/health\", interval = \"50ms\", timeout = \"1s\", rise = 1, fall = 1 }";
    let good = front(upstream, &format!(r#"{{ ca = "{}" }}{check}"#, p(&pki.ca_file())), 32);
    let bad = front(upstream, &format!(r#"{{ ca = "{}" }}{check}"#, p(&other.ca_file())), 32);
    let series = format!("ringway_upstream_health{{upstream=\"secure\",server=\"{upstream}\"}}");
    // The checks reached the backend through TLS...
    assert!(backend.wait_until(|reqs, _| reqs.iter().filter(|r| r.target() == "/health").count() >= 3));
    assert_eq!(metric(&good, &series), 1, "checks over verified TLS pass");
    // ...and a check that cannot verify the server fails it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&bad, &series) != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&bad, &series), 0, "a server that fails verification is down");
}

/// A TLS backend that answers one request with a response delimited by
/// the close, then closes with or without a `close_notify`.
fn close_delimited_tls_backend(issued: &crate::support::tls::Issued, notify: bool) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = issued.server_config();
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else { return };
        tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("server connection");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match std::io::Read::read(&mut tls, &mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = std::io::Write::write_all(&mut tls, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial body");
        if notify {
            tls.conn.send_close_notify();
        }
        let _ = std::io::Write::flush(&mut tls);
        let _ = tls.sock.shutdown(std::net::Shutdown::Both);
    });
    addr
}

/// Over TLS, only a `close_notify` proves that a response delimited by the
/// close is whole: a bare TCP close (which anyone on the path can forge)
/// leaves the client's chunked response unterminated.
#[test]
fn a_close_delimited_response_is_whole_only_with_a_close_notify() {
    let pki = Pki::new("up-trunc");
    let issued = pki.ca.server("server", &["localhost", "127.0.0.1"], 3);
    for notify in [true, false] {
        let upstream = close_delimited_tls_backend(&issued, notify);
        let f = front(upstream, &format!(r#"{{ ca = "{}" }}"#, p(&pki.ca_file())), 32);
        let raw = send_raw(f.addr("front"), b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("partial body"), "{text}");
        assert_eq!(text.ends_with("0\r\n\r\n"), notify, "notify = {notify}: {text}");
    }
}
