//! What a TLS listener does with clients that never finish a handshake:
//! silent, stalled and trickling ones are closed at `[timeouts] tls_handshake`,
//! garbage and plaintext HTTP are closed at once; each is counted by
//! reason, and the worker (one, so that it is the same one) keeps serving
//! TLS clients meanwhile and after.

use super::{one_cert, ONE_CERT};
use crate::support::tls::*;
use crate::support::*;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn silent_and_stalled_handshakes_are_closed_at_the_deadline_while_others_are_served() {
    let b = RecordingBackend::echo_id("b");
    let (dir, ca) = one_cert("tls-hs-timeout");
    let config = https_config(1, &[("tls_handshake", "300ms")], b.addr(), ONE_CERT, "");
    let p = Proxy::start_in(&dir.path, &config);
    let addr = p.addr("https");
    let opts = TlsOpts::verified(&ca, "a.example.test");

    let started = Instant::now();
    let mut silent = Conn::connect(addr);
    let mut stalled = Conn::connect(addr);
    stalled.write(&client_hello("a.example.test")[..40]);
    // A ClientHello trickling in a byte every 50 ms: the deadline is for
    // the whole handshake, not for each read.
    let mut trickle = Conn::connect(addr);
    let mut writer = trickle.stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        for byte in client_hello("a.example.test") {
            std::thread::sleep(Duration::from_millis(50));
            if writer.write_all(&[byte]).is_err() {
                return;
            }
        }
    });
    // Meanwhile, on the same (only) worker: a whole handshake and requests.
    let mut c = TlsClient::connect(addr, &opts).expect("handshake while two others hang");
    assert_eq!(c.get("/meanwhile").text(), "b /meanwhile\n");
    for (what, conn) in [("silent", &mut silent), ("stalled", &mut stalled), ("trickling", &mut trickle)] {
        let r = read_reply(conn);
        let after = started.elapsed();
        assert!(r.closed, "the {what} connection was not closed within {IO_TIMEOUT:?}");
        assert!(r.bytes.is_empty(), "the {what} connection got bytes: {:?}", r.bytes);
        assert!(after >= Duration::from_millis(250), "the {what} connection was closed before the deadline: {after:?}");
        assert!(after < Duration::from_secs(3), "the {what} connection was closed late: {after:?}");
    }
    wait_metric(&p, &failures("https", "timeout"), 3.0);

    // The deadline is the handshake's only: an established connection
    // that idles past it is still served.
    let idle_until = started + Duration::from_millis(800);
    std::thread::sleep(idle_until.saturating_duration_since(Instant::now()));
    assert_eq!(c.get("/after-idle").text(), "b /after-idle\n");
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 1.0);
    let c2 = TlsClient::connect(addr, &opts).expect("a later handshake");
    drop(c2);
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 2.0);
    assert_eq!(metric(&p, &failures("https", "timeout")), 3.0);
}

/// Sends `bytes` on a new connection and half-closes; what came back
/// before the proxy closed must be nothing or one TLS alert record.
fn sent_and_closed(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut c = Conn::connect(addr);
    c.write(bytes);
    let r = read_reply(&mut c);
    assert!(r.closed, "the proxy did not close after {:?}", String::from_utf8_lossy(bytes));
    assert!(
        r.bytes.is_empty() || (r.bytes[0] == 0x15 && r.bytes.len() == 7),
        "expected nothing or an alert after {:?}, got {:?}",
        String::from_utf8_lossy(bytes),
        r.text()
    );
}

#[test]
fn garbage_and_plaintext_http_on_a_tls_port_are_closed_and_counted() {
    let b = RecordingBackend::echo_id("b");
    let (dir, ca) = one_cert("tls-garbage");
    let p = Proxy::start_in(&dir.path, &https_config(1, &[], b.addr(), ONE_CERT, ""));
    let addr = p.addr("https");

    // Plaintext HTTP gets no HTTP answer.
    sent_and_closed(addr, b"GET / HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
    sent_and_closed(addr, b"\x00\x01\x02garbage\xff\xfe\r\n\r\n");
    // A handshake record whose message claims 16 MiB.
    sent_and_closed(addr, &[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff]);
    wait_metric(&p, &failures("https", "malformed"), 3.0);

    // Closed before a byte, and closed halfway through a ClientHello.
    drop(TcpStream::connect(addr).expect("connect"));
    let mut half = Conn::connect(addr);
    half.write(&client_hello("a.example.test")[..50]);
    let _ = half.stream.shutdown(Shutdown::Write);
    assert!(read_reply(&mut half).closed);
    wait_metric(&p, &failures("https", "closed"), 2.0);

    // The worker still serves TLS clients.
    let mut c = TlsClient::connect(addr, &TlsOpts::verified(&ca, "a.example.test")).expect("handshake after garbage");
    assert_eq!(c.get("/after").text(), "b /after\n");
    assert_eq!(c.get("/after2").text(), "b /after2\n");
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/after", "/after2"], "garbage reached the backend");
    wait_metric(&p, &handshakes("https", "TLSv1.3"), 1.0);
}
