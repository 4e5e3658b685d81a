//! Certificate reloads: `POST /reload` and SIGHUP re-read the certificate
//! files, new handshakes get the new certificate and established
//! connections keep theirs; a missing file, a key that does not match its
//! certificate or a broken PEM fails the reload (the running certificate
//! stays) and `ringway check`, naming the file.

use crate::support::ops::admin_post;
use crate::support::tls::*;
use crate::support::*;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, Instant};

const TLS: &str = r#"certificates = [ { cert = "cert.pem", key = "cert.key" } ]"#;

/// A proxy serving `first` from `cert.pem`/`cert.key` in `dir`.
fn start(dir: &CertDir, ca: &Ca, first: &Issued, b: &RecordingBackend) -> Proxy {
    dir.install("cert", first);
    dir.write("ca.pem", ca.pem());
    Proxy::start_in(&dir.path, &https_config(2, &[], b.addr(), TLS, ""))
}

/// The certificate a new handshake for `name` gets (verified), after a
/// request on it.
fn served(p: &Proxy, ca: &Ca, name: &str) -> CertDer {
    let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(ca, name)).expect("handshake");
    assert_eq!(c.get("/").status, 200);
    c.peer_cert()
}

type CertDer = CertificateDer<'static>;

#[test]
fn reload_serves_new_certificates_to_new_handshakes_and_keeps_established_connections() {
    let b = RecordingBackend::echo_id("b");
    let (ca, dir) = (Ca::new("Test CA"), CertDir::new("tls-reload"));
    let old = ca.server("old", &["a.example.test"], 1);
    let p = start(&dir, &ca, &old, &b);
    let mut established =
        TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
    assert_eq!(established.get("/before").status, 200);
    assert!(established.peer_cert() == old.der);

    let new = ca.server("new", &["a.example.test", "new.example.test"], 2);
    dir.install("cert", &new);
    let r = admin_post(&p, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(served(&p, &ca, "new.example.test") == new.der, "a new handshake got the old certificate");
    assert!(served(&p, &ca, "a.example.test") == new.der);
    assert_eq!(established.get("/during").text(), "b /during\n", "the established connection broke");

    // SIGHUP does the same.
    let third = ca.server("third", &["third.example.test"], 3);
    dir.install("cert", &third);
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = TlsClient::connect(p.addr("https"), &TlsOpts::any_cert(Some("third.example.test"))).expect("handshake");
        if c.peer_cert() == third.der {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not bring the new certificate in");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served(&p, &ca, "third.example.test") == third.der);
    assert_eq!(established.get("/after").text(), "b /after\n");
    assert!(established.peer_cert() == old.der);
}

/// `ringway check -c FILE`: (exit code, stderr).
fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = tool(bin(), &["check", "-c", config.to_str().expect("utf-8")], b"").expect("ringway runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_bad_certificate_file_fails_the_reload_and_check_naming_it_and_the_old_one_stays() {
    let b = RecordingBackend::echo_id("b");
    let (ca, dir) = (Ca::new("Test CA"), CertDir::new("tls-reload-bad"));
    let good = ca.server("good", &["a.example.test"], 1);
    let p = start(&dir, &ca, &good, &b);
    let config = dir.join("ringway.toml");
    let (cert, key) = (dir.join("cert.pem").display().to_string(), dir.join("cert.key").display().to_string());
    let other_key = ca.server("other", &["a.example.test"], 9).key_pem;
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let cases: [(&str, &dyn Fn(), &str); 4] = [
        ("missing certificate", &|| std::fs::remove_file(dir.join("cert.pem")).expect("remove"), &cert),
        ("key of another certificate", &|| dir.write("cert.key", &other_key), &key),
        ("garbage PEM", &|| dir.write("cert.pem", garbage), &cert),
        ("a key where the certificate should be", &|| dir.write("cert.pem", &good.key_pem), &cert),
    ];
    for (what, damage, file) in cases {
        damage();
        let r = admin_post(&p, "/reload");
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(doc["reloaded"], false, "{what}: {doc}");
        let error = doc["error"].as_str().expect("error text");
        assert!(error.contains(file), "{what}: the error does not name {file}: {error}");
        assert!(served(&p, &ca, "a.example.test") == good.der, "{what}: the running certificate changed");

        let (code, stderr) = check(&config);
        assert_eq!(code, Some(1), "{what}: check passed: {stderr}");
        assert!(stderr.contains(file), "{what}: check does not name {file}: {stderr}");
        dir.install("cert", &good);
    }
    assert_eq!(check(&config).0, Some(0), "the restored files");

    // SIGHUP: the refusal is logged with the file's name.
    dir.write("cert.key", &other_key);
    p.signal(libc::SIGHUP);
    assert!(p.wait_stderr(&key, Duration::from_secs(5)), "no log line names {key}:\n{}", p.stderr());
    assert!(p.stderr().contains("reload refused"), "{}", p.stderr());
    assert!(served(&p, &ca, "a.example.test") == good.der);
}
