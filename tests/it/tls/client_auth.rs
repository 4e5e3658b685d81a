//! Client certificates (`client_ca`): a certificate from that CA is
//! required; its subject goes to the backend in `client_subject_header`,
//! and a client can never send that header itself.

use crate::support::tls::*;
use crate::support::*;

struct Mtls {
    dir: CertDir,
    server_ca: Ca,
    client_ca: Ca,
    b: RecordingBackend,
    p: Proxy,
}

fn mtls(stem: &str) -> Mtls {
    let (server_ca, client_ca) = (Ca::new("Server CA"), Ca::new("Client CA"));
    let dir = CertDir::new(stem);
    dir.install("a", &server_ca.server("a", &["a.example.test"], 1));
    dir.write("clients.pem", client_ca.pem());
    let b = RecordingBackend::echo_id("b");
    let tls = r#"certificates = [ { cert = "a.pem", key = "a.key" } ], client_ca = "clients.pem", client_subject_header = "X-Client-Subject""#;
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), tls, ""));
    Mtls { dir, server_ca, client_ca, b, p }
}

#[test]
fn a_certificate_from_client_ca_is_accepted_and_its_subject_forwarded() {
    let m = mtls("tls-mtls-ok");
    let addr = m.p.addr("https");
    let alice = m.client_ca.client("alice");
    let opts = TlsOpts::verified(&m.server_ca, "a.example.test").client_cert(&alice);
    let mut c = TlsClient::connect(addr, &opts).expect("handshake with a client certificate");
    // The client's own copies of the header are dropped, whatever the case.
    let r = c
        .request(b"GET /one HTTP/1.1\r\nHost: a\r\nX-Client-Subject: CN=mallory\r\nx-client-subject: CN=eve\r\n\r\n")
        .expect("response");
    assert_eq!((r.status, r.text()), (200, "b /one\n".to_string()));
    assert_eq!(c.get("/two").status, 200, "keep-alive");
    let bob = m.client_ca.client("bob");
    let mut c12 = TlsClient::connect(addr, &opts.clone().only(&TLS12).client_cert(&bob)).expect("TLS 1.2 handshake");
    assert_eq!(c12.get("/three").status, 200);

    let seen = m.b.wait_requests(3);
    for (r, want) in seen.iter().zip(["CN=alice", "CN=alice", "CN=bob"]) {
        assert_eq!(r.headers_named("x-client-subject"), [want], "{}", r.raw_head);
        assert_eq!(r.headers_named("x-forwarded-proto"), ["https"]);
    }
    wait_metric(&m.p, &handshakes("https", "TLSv1.3"), 1.0);
    wait_metric(&m.p, &handshakes("https", "TLSv1.2"), 1.0);

    // curl with the client certificate.
    m.dir.install("alice", &alice);
    m.dir.write("ca.pem", m.server_ca.pem());
    let (cert, key) = (m.dir.join("alice.pem"), m.dir.join("alice.key"));
    let extra = ["--cert", cert.to_str().expect("utf-8"), "--key", key.to_str().expect("utf-8")];
    if let Some(out) = curl(&m.dir.join("ca.pem"), "a.example.test", addr.port(), &extra, &["/curl"]) {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "b /curl\n", "{}", String::from_utf8_lossy(&out.stderr));
        let seen = m.b.wait_requests(4);
        assert_eq!(seen[3].headers_named("x-client-subject"), ["CN=alice"]);
    }
}

/// The proxy refuses the client with an alert or a close, not by
/// leaving it waiting.
fn assert_refused(addr: std::net::SocketAddr, opts: &TlsOpts) {
    let e = refused(addr, opts);
    let waited = matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock);
    assert!(!waited, "refused by a timeout, not by the proxy: {e}");
}

#[test]
fn no_client_certificate_or_one_from_another_ca_is_refused() {
    let m = mtls("tls-mtls-refused");
    let addr = m.p.addr("https");
    let stranger = Ca::new("Other CA").client("mallory");
    let server_signed = m.server_ca.client("server-ca-client");
    let opts = TlsOpts::verified(&m.server_ca, "a.example.test");
    for v in [&TLS13, &TLS12] {
        assert_refused(addr, &opts.clone().only(v));
        assert_refused(addr, &opts.clone().only(v).client_cert(&stranger));
        assert_refused(addr, &opts.clone().only(v).client_cert(&server_signed));
    }
    wait_metric(&m.p, &failures("https", "client_certificate"), 6.0);
    assert_eq!(metric(&m.p, &handshakes("https", "TLSv1.3")), 0.0);
    assert_eq!(metric(&m.p, &handshakes("https", "TLSv1.2")), 0.0);
    assert!(m.b.requests().is_empty(), "a refused client reached the backend: {:?}", m.b.requests());
    // The listener still serves a good client.
    let alice = m.client_ca.client("alice");
    let mut c = TlsClient::connect(addr, &opts.client_cert(&alice)).expect("handshake");
    assert_eq!(c.get("/ok").status, 200);

    m.dir.write("ca.pem", m.server_ca.pem());
    if let Some(out) = curl(&m.dir.join("ca.pem"), "a.example.test", addr.port(), &[], &["/curl"]) {
        assert!(!out.status.success(), "curl without a certificate: {}", String::from_utf8_lossy(&out.stdout));
        assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
