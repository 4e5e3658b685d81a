//! TLS termination on listeners: routes over HTTPS, SNI certificate
//! choice, TLS versions, ALPN, the HTTP→HTTPS redirect and WebSocket
//! tunnels over TLS; the handshake's failures, client certificates and
//! certificate reloads are in the submodules. Certificates are made at run
//! time (`support::tls`), checked with rustls, and with `curl` and
//! `openssl s_client` where installed.

use crate::support::ops::free_port;
use crate::support::tls::*;
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;

mod client_auth;
mod handshake_faults;
mod reload;

/// One certificate for `a.example.test` (`a.pem`, `a.key`) and the CA
/// (`ca.pem`) in a fresh directory.
fn one_cert(stem: &str) -> (CertDir, Ca) {
    let ca = Ca::new("Test CA");
    let dir = CertDir::new(stem);
    dir.install("a", &ca.server("a", &["a.example.test"], 1));
    dir.write("ca.pem", ca.pem());
    (dir, ca)
}

const ONE_CERT: &str = r#"certificates = [ { cert = "a.pem", key = "a.key" } ]"#;

#[test]
fn https_routes_proxy_and_answer_locally_on_one_keep_alive_connection() {
    let b = RecordingBackend::echo_id("b");
    let (dir, ca) = one_cert("tls-routes");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), ONE_CERT, ""));
    let addr = p.addr("https");
    let mut c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
    let r = c.get("/");
    assert_eq!((r.status, r.text()), (200, "b /\n".to_string()), "{}", r.raw_head);
    // A client's own X-Forwarded-Proto is replaced, not passed on.
    let r = c
        .request(b"GET /x?y=1 HTTP/1.1\r\nHost: a.example.test\r\nX-Forwarded-Proto: http\r\n\r\n")
        .expect("second response");
    assert_eq!((r.status, r.text()), (200, "b /x?y=1\n".to_string()));
    assert_eq!(c.get("/admin/users").status, 403);
    assert_eq!(c.get("/again").text(), "b /again\n");
    // Pipelined: three requests in one write (one TLS record), answered
    // in order though the later ones wait decrypted in the proxy.
    c.send(
        b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .expect("send");
    let got: Vec<(u16, String)> =
        (0..3).map(|_| c.read_response().expect("pipelined response")).map(|r| (r.status, r.text())).collect();
    assert_eq!((got[0].0, got[0].1.as_str(), got[1].0), (200, "b /p1\n", 403), "{got:?}");
    assert_eq!((got[2].0, got[2].1.as_str()), (200, "b /p3\n"), "{got:?}");

    let seen = b.wait_requests(5);
    let targets: Vec<&str> = seen.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/", "/x?y=1", "/again", "/p1", "/p3"], "the 403 route reached the backend?");
    for s in &seen {
        assert_eq!(s.headers_named("x-forwarded-proto"), ["https"], "{}", s.raw_head);
    }
    // Seven requests, one handshake.
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 1.0);

    // curl: two URLs on one connection, the certificate checked by name.
    let w = ["-w", "%{http_code} %{num_connects}\n"];
    if let Some(out) = curl(&dir.join("ca.pem"), "a.example.test", addr.port(), &w, &["/curl", "/admin"]) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("b /curl\n200 1\n"), "{stdout:?}");
        assert!(stdout.ends_with("403 0\n"), "the second URL did not reuse the connection: {stdout:?}");
        wait_metric(&p, &handshakes("https", "TLSv1.3"), 2.0);
    }
}

/// `default.pem` (first: the default), `api.pem` (exact name) and
/// `wild.pem` (`*.example.test`); returns their DER in that order.
fn sni_certs(dir: &CertDir, ca: &Ca) -> [rustls::pki_types::CertificateDer<'static>; 3] {
    let certs = [
        ("default", ca.server("default", &["default.test"], 1)),
        ("api", ca.server("api", &["api.example.test"], 2)),
        ("wild", ca.server("wild", &["*.example.test"], 3)),
    ];
    for (stem, c) in &certs {
        dir.install(stem, c);
    }
    dir.write("ca.pem", ca.pem());
    certs.map(|(_, c)| c.der)
}

fn sni_tls(strict: bool) -> String {
    format!(
        r#"certificates = [ {{ cert = "default.pem", key = "default.key" }}, {{ cert = "api.pem", key = "api.key" }}, {{ cert = "wild.pem", key = "wild.key" }} ], sni_strict = {strict}"#
    )
}

/// The `subject=` line of `openssl s_client` output.
fn subject_line(out: &str) -> &str {
    out.lines().find(|l| l.starts_with("subject=")).unwrap_or_else(|| panic!("no subject in {out}"))
}

#[test]
fn sni_picks_the_exact_name_then_the_wildcard_else_the_first_certificate() {
    let b = RecordingBackend::echo_id("b");
    let (ca, dir) = (Ca::new("Test CA"), CertDir::new("tls-sni"));
    let [default, api, wild] = sni_certs(&dir, &ca);
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), &sni_tls(false), ""));
    let addr = p.addr("https");
    let served = |opts: TlsOpts| {
        let mut c = TlsClient::connect(addr, &opts).unwrap_or_else(|e| panic!("handshake for {}: {e}", opts.name));
        assert_eq!(c.get("/").status, 200);
        c.peer_cert()
    };
    // Verified against the CA for the name asked: the right certificate.
    assert!(served(TlsOpts::verified(&ca, "api.example.test")) == api, "exact name");
    assert!(served(TlsOpts::verified(&ca, "www.example.test")) == wild, "wildcard");
    assert!(served(TlsOpts::verified(&ca, "default.test")) == default);
    // No name, or one no certificate has: the first one.
    assert!(served(TlsOpts::any_cert(None)) == default, "no SNI");
    assert!(served(TlsOpts::any_cert(Some("other.test"))) == default, "unknown name");
    assert!(served(TlsOpts::any_cert(Some("a.b.example.test"))) == default, "a wildcard covers one label");
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 6.0);

    let ca_file = dir.join("ca.pem");
    let ca_arg = ca_file.to_str().expect("utf-8");
    if let Some(out) = s_client(addr, &["-servername", "www.example.test", "-CAfile", ca_arg, "-verify_return_error"]) {
        assert!(subject_line(&out).ends_with("wild"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        let out = s_client(addr, &["-noservername"]).expect("openssl");
        assert!(subject_line(&out).ends_with("default"), "{out}");
    }
}

#[test]
fn sni_strict_refuses_names_without_a_certificate() {
    let b = RecordingBackend::echo_id("b");
    let (ca, dir) = (Ca::new("Test CA"), CertDir::new("tls-sni-strict"));
    let [_, api, wild] = sni_certs(&dir, &ca);
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), &sni_tls(true), ""));
    let addr = p.addr("https");
    let c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "api.example.test")).expect("a known name");
    assert!(c.peer_cert() == api);
    let c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "x.example.test")).expect("a wildcard name");
    assert!(c.peer_cert() == wild);
    for opts in [TlsOpts::any_cert(Some("other.test")), TlsOpts::any_cert(None)] {
        let e = TlsClient::connect(addr, &opts).err().unwrap_or_else(|| panic!("{} was served", opts.name));
        assert!(alert_of(&e).is_some(), "expected an alert, got {e}");
    }
    wait_metric(&p, &failures("https", "unknown_sni"), 2.0);
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 2.0);
    assert!(b.requests().is_empty());
    if let Some(out) = s_client(addr, &["-servername", "other.test"]) {
        assert!(!out.contains("subject="), "a certificate was sent for an unknown name: {out}");
    }
}

#[test]
fn tls_1_2_and_1_3_both_work_and_min_version_1_3_refuses_1_2() {
    let b = RecordingBackend::echo_id("b");
    let (dir, ca) = one_cert("tls-versions");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), ONE_CERT, ""));
    let addr = p.addr("https");
    for (v, want) in [(&TLS12, ProtocolVersion::TLSv1_2), (&TLS13, ProtocolVersion::TLSv1_3)] {
        let mut c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "a.example.test").only(v)).expect("handshake");
        assert_eq!(c.session().protocol_version(), Some(want));
        assert_eq!(c.get("/v").text(), "b /v\n");
    }
    wait_metric(&p, &handshakes("https", "TLSv1.2"), 1.0);
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 1.0);
    if let Some(out) = s_client(addr, &["-tls1_2", "-servername", "a.example.test"]) {
        assert!(out.contains("Protocol  : TLSv1.2") || out.contains("New, TLSv1.2"), "{out}");
    }

    let tls13 = format!("{ONE_CERT}, min_version = \"1.3\"");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), &tls13, ""));
    let addr = p.addr("https");
    let e = TlsClient::connect(addr, &TlsOpts::verified(&ca, "a.example.test").only(&TLS12))
        .err()
        .expect("a TLS 1.2 client was served by a 1.3-only listener");
    assert_eq!(alert_of(&e), Some(AlertDescription::ProtocolVersion), "{e}");
    wait_metric(&p, &failures("https", "incompatible"), 1.0);
    let mut c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "a.example.test").only(&TLS13)).expect("1.3");
    assert_eq!(c.get("/13").status, 200);
    if let Some(out) = s_client(addr, &["-tls1_2"]) {
        assert!(!out.contains("subject="), "openssl -tls1_2 got a certificate: {out}");
    }
}

#[test]
fn alpn_offers_only_http_1_1() {
    let b = RecordingBackend::echo_id("b");
    let (dir, ca) = one_cert("tls-alpn");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), ONE_CERT, ""));
    let addr = p.addr("https");
    let opts = TlsOpts::verified(&ca, "a.example.test");
    for v in [&TLS13, &TLS12] {
        let e = TlsClient::connect(addr, &opts.clone().only(v).alpn(&[b"h2"])).err().expect("h2-only was served");
        assert_eq!(alert_of(&e), Some(AlertDescription::NoApplicationProtocol), "{e}");
    }
    wait_metric(&p, &failures("https", "alpn"), 2.0);
    let mut c = TlsClient::connect(addr, &opts.clone().alpn(&[b"h2", b"http/1.1"])).expect("h2 and http/1.1");
    assert_eq!(c.session().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(c.get("/both").text(), "b /both\n");
    let mut c = TlsClient::connect(addr, &opts.alpn(&[])).expect("no ALPN");
    assert_eq!(c.session().alpn_protocol(), None);
    assert_eq!(c.get("/none").text(), "b /none\n");
    assert_eq!(b.requests().len(), 2);

    let w = ["--http2", "-w", "%{http_version}"];
    if let Some(out) = curl(&dir.join("ca.pem"), "a.example.test", addr.port(), &w, &["/curl"]) {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "b /curl\n1.1");
    }
    if let Some(out) = s_client(addr, &["-alpn", "h2", "-servername", "a.example.test"]) {
        assert!(out.to_ascii_lowercase().contains("no application protocol"), "{out}");
    }
}

#[test]
fn http_listener_redirects_to_https_with_host_path_and_query() {
    let b = RecordingBackend::echo_id("b");
    let ca = Ca::new("Test CA");
    let dir = CertDir::new("tls-redirect");
    dir.install("a", &ca.server("a", &["example.test"], 1));
    dir.write("ca.pem", ca.pem());
    let port = free_port();
    let http = format!(
        "[[listeners]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", redirect = \"https\", redirect_port = {port} }}, {{ prefix = \"/default-port\", redirect = \"https\" }} ]\n"
    );
    let config = https_config_on(&format!("127.0.0.1:{port}"), 2, &[], b.addr(), ONE_CERT, &http);
    let p = Proxy::start_in(&dir.path, &config);
    assert_eq!(p.addr("https").port(), port);
    let plain = p.addr("http");

    let r = request(plain, b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n");
    assert_eq!(r.status, 308, "{}", r.raw_head);
    let location = format!("https://example.test:{port}/a/b?x=1&y=%20");
    assert_eq!(r.header("location"), Some(location.as_str()), "{}", r.raw_head);
    let r = request(plain, b"POST /default-port/p?q HTTP/1.1\r\nHost: Example.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.status, r.header("location")), (308, Some("https://Example.test/default-port/p?q")));
    assert_eq!(request(plain, b"GET / HTTP/1.0\r\n\r\n").status, 400, "no Host to redirect to");
    assert!(b.requests().is_empty(), "a redirect route reached the backend");

    // Following the Location lands on the HTTPS listener.
    let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "example.test")).expect("handshake");
    assert_eq!(c.get("/a/b?x=1&y=%20").text(), "b /a/b?x=1&y=%20\n");
    let resolve = |p: u16| format!("example.test:{p}:127.0.0.1");
    let (r1, r2) = (resolve(plain.port()), resolve(port));
    let ca_file = dir.join("ca.pem");
    let url = format!("http://example.test:{}/c?d=1", plain.port());
    let args = ["-sS", "-L", "--max-time", "10", "--cacert", ca_file.to_str().expect("utf-8")];
    let w = ["--resolve", &r1, "--resolve", &r2, "-w", "%{http_code} %{url_effective}", &url];
    if let Some(out) = tool("curl", &[&args[..], &w[..]].concat(), b"") {
        let want = format!("b /c?d=1\n200 https://example.test:{port}/c?d=1");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{}", String::from_utf8_lossy(&out.stderr));
    }
}

const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// After the 101: `srv-hello`, then echoes every byte until `bye`.
fn echo_after_101(early: Vec<u8>, s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(SWITCHING)?;
    s.write_all(b"srv-hello")?;
    let (mut pending, mut tmp) = (early, vec![0u8; 64 * 1024]);
    for _ in 0..100_000 {
        s.write_all(&pending)?;
        if pending.ends_with(b"bye") {
            return Ok(());
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        pending = tmp[..n].to_vec();
    }
    Ok(())
}

#[test]
fn websocket_upgrade_tunnels_both_ways_over_tls() {
    let b = RecordingBackend::start(|r| match r.target() {
        "/ws" => Reply::Takeover(Box::new(echo_after_101)),
        _ => ok("plain"),
    });
    let (dir, ca) = one_cert("tls-ws");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), ONE_CERT, ""));
    let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
    assert_eq!(c.get("/before").text(), "plain", "a request before the upgrade");
    c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").expect("send");
    let head = String::from_utf8_lossy(&c.read_until(b"\r\n\r\n").expect("101")).to_string();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(c.read_exact_vec(9).expect("server first"), b"srv-hello");
    c.send(b"ping").expect("send");
    assert_eq!(c.read_exact_vec(4).expect("echo"), b"ping");
    // More than a TLS record each way.
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    c.send(&blob).expect("send blob");
    assert!(c.read_exact_vec(blob.len()).expect("blob echo") == blob, "the echo differs");
    c.send(b"bye").expect("send");
    assert_eq!(c.read_exact_vec(3).expect("bye"), b"bye");
    assert!(c.read_to_close().expect("close").is_empty(), "bytes after the tunnel ended");
    let seen = b.requests();
    assert_eq!(seen.len(), 2, "tunnel bytes were parsed as requests");
    assert_eq!(seen[1].headers_named("upgrade"), ["websocket"]);
    assert_eq!(seen[1].headers_named("x-forwarded-proto"), ["https"]);
}

#[test]
fn large_bodies_cross_tls_both_ways_on_one_connection() {
    const COPIES: usize = 64; // 4 MiB: hundreds of TLS records each way.
    let b = RecordingBackend::start_counting(|r| match r.target() {
        "/down" => {
            let body = pattern().repeat(COPIES);
            let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            reply.extend_from_slice(&body);
            Reply::Bytes(reply)
        }
        _ => ok("up"),
    });
    let (dir, ca) = one_cert("tls-bodies");
    let p = Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), ONE_CERT, ""));
    let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
    let body = pattern().repeat(COPIES);
    let mut req = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req).expect("upload answer");
    assert_eq!((r.status, r.text()), (200, "up".to_string()));
    let seen = b.wait_requests(1);
    assert_eq!((seen[0].body_len, seen[0].body_matches_pattern), (body.len() as u64, true));
    let r = c.get("/down");
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the downloaded body differs ({} bytes)", r.body.len());
    assert_eq!(c.get("/again").text(), "up", "the connection is still in step");
}
