//! Parked connections (issue 16): a keep-alive connection still idle some
//! 50 ms into its wait leaves its session's task for a small one
//! (`src/proxy/parked.rs`), counted in `ringway_connections_parked`. It
//! must behave as an unparked one: served when it asks again (pipelined
//! requests included), closed at `client_idle` counted from its last
//! request, closed at once at a graceful stop, and keeping its PROXY
//! client address and its TLS session.

use crate::support::tcp::{pp_config, v1, LOOPBACK};
use crate::support::tls::{https_config, metric, wait_metric, Ca, CertDir, TlsClient, TlsOpts};
use crate::support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const PARKED: &str = "ringway_connections_parked";

fn proxy(b: &RecordingBackend, timeouts: &[(&str, &str)]) -> Proxy {
    start_proxy(1, timeouts, &format!("\"{}\"", b.addr()), "")
}

#[test]
fn a_parked_connection_is_served_when_it_asks_again() {
    let b = RecordingBackend::echo_id("b");
    let p = proxy(&b, &[]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(p.addr("public"))).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.get(&format!("/first{i}")).text(), format!("b /first{i}\n"));
    }
    wait_metric(&p, PARKED, 3.0);
    assert_eq!(clients[0].get("/again").text(), "b /again\n");
    // Two requests in one write wake a parked connection once; both are
    // answered, in order.
    clients[1].send(b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(clients[1].read_response(false).text(), "b /p1\n");
    assert_eq!(clients[1].read_response(false).text(), "b /p2\n");
    wait_metric(&p, PARKED, 1.0);
    assert_eq!(metric(&p, "ringway_connections{listener=\"public\"}"), 3.0);
    // Served connections park again once idle.
    wait_metric(&p, PARKED, 3.0);
    assert_eq!(clients[2].get("/last").text(), "b /last\n");
    assert_eq!(b.wait_requests(7).len(), 7);
}

#[test]
fn a_connection_that_never_asked_parks_and_is_served_later() {
    let b = RecordingBackend::echo_id("b");
    let p = proxy(&b, &[]);
    let mut c = Client::connect(p.addr("public"));
    wait_metric(&p, PARKED, 1.0);
    assert_eq!(c.get("/late").text(), "b /late\n");
}

#[test]
fn a_parked_connection_closes_at_client_idle_and_is_counted_closed() {
    let b = RecordingBackend::echo_id("b");
    let p = proxy(&b, &[("client_idle", "3s")]);
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/one").text(), "b /one\n");
    let idle_from = Instant::now();
    wait_metric(&p, PARKED, 1.0);
    assert!(c.conn.closed_within(Duration::from_secs(6)), "a parked connection outlived client_idle");
    let took = idle_from.elapsed();
    // The deadline runs from the last request, not from the park.
    assert!(took >= Duration::from_millis(2500) && took < Duration::from_millis(5000), "closed after {took:?}");
    wait_metric(&p, PARKED, 0.0);
    wait_metric(&p, "ringway_connections{listener=\"public\"}", 0.0);
}

#[test]
fn a_graceful_stop_closes_parked_connections_at_once() {
    let b = RecordingBackend::echo_id("b");
    let mut p = proxy(&b, &[]);
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/one").text(), "b /one\n");
    wait_metric(&p, PARKED, 1.0);
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);
    assert!(c.conn.closed_within(Duration::from_secs(2)), "a parked connection held the stop");
    assert!(p.wait_exit(Duration::from_secs(5)).is_some(), "the proxy did not exit");
    assert!(signalled.elapsed() < Duration::from_secs(5), "stop took {:?}", signalled.elapsed());
}

#[test]
fn a_parked_proxy_protocol_connection_keeps_its_client_address() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[], ""));
    let mut c = Client::connect(p.addr("public"));
    c.send(&[v1("203.0.113.9", "192.0.2.1", 40000, 80), b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()].concat());
    assert_eq!(c.read_response(false).text(), "b /one\n");
    wait_metric(&p, PARKED, 1.0);
    assert_eq!(c.get("/two").text(), "b /two\n");
    let seen = b.wait_requests(2);
    assert_eq!(seen[1].headers_named("x-forwarded-for"), ["203.0.113.9"], "{}", seen[1].raw_head);
}

#[test]
fn a_parked_tls_connection_resumes_and_idles_out_with_close_notify() {
    let b = RecordingBackend::echo_id("b");
    let ca = Ca::new("Test CA");
    let dir = CertDir::new("parked-tls");
    dir.install("a", &ca.server("a", &["a.example.test"], 1));
    let tls = r#"certificates = [ { cert = "a.pem", key = "a.key" } ]"#;
    let p = Proxy::start_in(&dir.path, &https_config(1, &[("client_idle", "3s")], b.addr(), tls, ""));
    let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
    assert_eq!(c.get("/one").text(), "b /one\n");
    wait_metric(&p, PARKED, 1.0);
    assert_eq!(c.get("/two").text(), "b /two\n");
    wait_metric(&p, PARKED, 1.0);
    // Idled out while parked: a clean TLS close (close_notify), not a
    // bare TCP close that a client must treat as truncation.
    // (rustls reads a close without one as `UnexpectedEof`.)
    let mut buf = [0u8; 64];
    let n = c.stream.read(&mut buf);
    assert!(matches!(n, Ok(0)), "expected a close_notify, got {n:?}");
}

/// A TLS client that sends one byte of a record and nothing more, between
/// requests: the read that follows the poll (or the park) waits for the
/// rest of the record, so it is bounded by `client_header`, not left to
/// hold the connection past every deadline (it was unbounded before).
#[test]
fn a_tls_client_sending_part_of_a_record_between_requests_is_closed_at_client_header() {
    let b = RecordingBackend::echo_id("b");
    let ca = Ca::new("Test CA");
    let dir = CertDir::new("parked-tls-partial");
    dir.install("a", &ca.server("a", &["a.example.test"], 1));
    let tls = r#"certificates = [ { cert = "a.pem", key = "a.key" } ]"#;
    let timeouts = [("client_idle", "30s"), ("client_header", "1s")];
    let p = Proxy::start_in(&dir.path, &https_config(1, &timeouts, b.addr(), tls, ""));
    for park_first in [false, true] {
        let mut c = TlsClient::connect(p.addr("https"), &TlsOpts::verified(&ca, "a.example.test")).expect("handshake");
        assert_eq!(c.get("/one").text(), "b /one\n");
        if park_first {
            wait_metric(&p, PARKED, 1.0);
        }
        // The first byte of an application-data record header, under TLS.
        c.stream.sock.write_all(&[0x17]).expect("one raw byte");
        let sent = Instant::now();
        let mut rest = Vec::new();
        let _ = c.stream.read_to_end(&mut rest);
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "park_first={park_first}: closed after {took:?}; client_idle is 30 s, client_header 1 s"
        );
    }
}
