//! The PROXY protocol (issue 15): listeners with `proxy_protocol = true`
//! read a v1 or v2 header from their `trusted` peers and take the client's
//! address from it (forwarding fields, access log, hash balancing), before
//! TLS too; anything else is closed unanswered and counted by reason. And
//! `send_proxy_protocol` on an upstream: a second ringway behind the first
//! sees the original client, over pooled connections that serve only it.

use crate::support::ops::{wait_log_lines, TempFile};
use crate::support::tcp::*;
use crate::support::tls::{Ca, CertDir, Preface, TlsClient, TlsOpts};
use crate::support::*;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// A keep-alive client that sent `header` and `request` in one write (one
/// packet), with the response to that request.
fn with_header(addr: SocketAddr, header: &[u8], request: &str) -> (Client, Response) {
    let mut c = Client::connect(addr);
    c.send(&[header, request.as_bytes()].concat());
    let r = c.read_response(false);
    (c, r)
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

#[test]
fn v1_and_v2_headers_name_the_client_in_forwarding_fields_and_the_access_log() {
    let b = RecordingBackend::echo_id("b");
    let log = TempFile::new("pp-access");
    let more = format!("\n[access_log]\npath = \"{}\"\n", log.0.display());
    let p = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[], &more));
    let addr = p.addr("public");
    let (mut c, r) = with_header(addr, &v1("203.0.113.7", "192.0.2.1", 40000, 80), &get_req("/one"));
    assert_eq!((r.status, r.text()), (200, "b /one\n".to_string()));
    // The address holds for the whole connection.
    assert_eq!(c.get("/two").text(), "b /two\n");
    let (_, r) = with_header(addr, &v2([203, 0, 113, 8], [192, 0, 2, 1], 40001, 80), &get_req("/three"));
    assert_eq!((r.status, r.text()), (200, "b /three\n".to_string()));

    let seen = b.wait_requests(3);
    for (rec, client) in seen.iter().zip(["203.0.113.7", "203.0.113.7", "203.0.113.8"]) {
        assert_eq!(rec.headers_named("x-forwarded-for"), [client], "{}", rec.raw_head);
        assert_eq!(rec.headers_named("x-real-ip"), [client], "{}", rec.raw_head);
    }
    let lines = wait_log_lines(&log.0, 3);
    // Workers write their own lines: in any order across connections.
    let mut clients: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap_or("")).collect();
    clients.sort_unstable();
    assert_eq!(clients, ["203.0.113.7", "203.0.113.7", "203.0.113.8"], "{lines:#?}");
}

#[test]
fn hash_on_client_ip_balances_on_the_header_address() {
    let (a, b) = (RecordingBackend::echo_id("a"), RecordingBackend::echo_id("b"));
    let hash = "balance = \"hash\"\nhash_key = \"client_ip\"";
    let p = Proxy::start(&pp_config(&[a.addr(), b.addr()], hash, LOOPBACK, &[], ""));
    let mut chosen = Vec::new();
    for last in 1..=12u16 {
        let client = format!("198.51.100.{last}");
        let ids: Vec<String> = (0..3)
            .map(|k| {
                let header = v1(&client, "192.0.2.1", 30000 + last * 10 + k, 80);
                let (_, r) = with_header(p.addr("public"), &header, &get_req("/h"));
                assert_eq!(r.status, 200);
                r.text()
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{client} moved between servers: {ids:?}");
        chosen.push(ids[0].clone());
    }
    let servers: std::collections::BTreeSet<&String> = chosen.iter().collect();
    assert_eq!(servers.len(), 2, "the header addresses spread over both servers: {chosen:?}");
}

#[test]
fn an_untrusted_peer_is_closed_unanswered() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&pp_config(&[b.addr()], "", "\"10.0.0.0/8\"", &[], ""));
    let request = [v1("203.0.113.7", "192.0.2.1", 40000, 80), get_req("/").into_bytes()].concat();
    let reply = exchange(p.addr("public"), &request);
    assert!(reply.closed && reply.bytes.is_empty(), "{:?}", reply.text());
    wait_series(&p, &proxy_refused("public", "untrusted"), 1.0);
    assert_eq!(b.connections_accepted(), 0, "the backend saw nothing");
}

#[test]
fn bad_headers_are_closed_and_counted_by_reason() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[("client_header", "300ms")], ""));
    let addr = p.addr("public");

    let reply = exchange(addr, get_req("/").as_bytes());
    assert!(reply.closed && reply.bytes.is_empty(), "no header: {:?}", reply.text());
    wait_series(&p, &proxy_refused("public", "malformed"), 1.0);

    let mut c = Conn::connect(addr);
    c.write(b"PROXY TCP4 203.0.113");
    c.stream.shutdown(Shutdown::Write).expect("half-close");
    let reply = read_reply(&mut c);
    assert!(reply.closed && reply.bytes.is_empty(), "truncated: {:?}", reply.text());
    wait_series(&p, &proxy_refused("public", "closed"), 1.0);

    let mut c = Conn::connect(addr);
    let started = Instant::now();
    c.write(b"PROXY TCP4 ");
    let reply = read_reply(&mut c);
    let waited = started.elapsed();
    assert!(reply.closed && reply.bytes.is_empty(), "never complete: {:?}", reply.text());
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "closed after {waited:?}");
    wait_series(&p, &proxy_refused("public", "timeout"), 1.0);

    let long = [b"PROXY TCP4 ".to_vec(), vec![b'1'; 120]].concat();
    let reply = exchange(addr, &long);
    assert!(reply.closed && reply.bytes.is_empty(), "oversize v1 line: {:?}", reply.text());
    wait_series(&p, &proxy_refused("public", "too_large"), 1.0);
    assert_eq!(b.connections_accepted(), 0, "the backend saw nothing");
}

#[test]
fn a_v2_local_header_is_served_with_the_sockets_address() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[], ""));
    let (_, r) = with_header(p.addr("public"), &v2_local(), &get_req("/local"));
    assert_eq!((r.status, r.text()), (200, "b /local\n".to_string()));
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].headers_named("x-forwarded-for"), ["127.0.0.1"], "{}", seen[0].raw_head);
}

/// A trusted balancer relaying a client whose address it did not carry
/// (v1 `UNKNOWN`): the socket's address stands, but the client's own
/// forwarding fields are not believed as the balancer's would be.
#[test]
fn a_client_relayed_without_its_address_cannot_forge_forwarding_fields() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[], ""));
    let request = "GET /unknown HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n";
    let (_, r) = with_header(p.addr("public"), b"PROXY UNKNOWN\r\n", request);
    assert_eq!(r.status, 200);
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].headers_named("x-forwarded-for"), ["127.0.0.1"], "{}", seen[0].raw_head);
    assert_eq!(seen[0].headers_named("x-real-ip"), ["127.0.0.1"], "{}", seen[0].raw_head);
}

/// Listener `public` with TLS and PROXY protocol; a v1 and a v2 header,
/// each sent `how`, then a handshake and a request: the backend sees the
/// header's address, over HTTPS.
fn proxy_header_then_tls(how: Preface) {
    let b = RecordingBackend::echo_id("b");
    let (ca, dir) = (Ca::new("Test CA"), CertDir::new("pp-tls"));
    dir.install("a", &ca.server("a", &["a.example.test"], 1));
    let tls = "tls = { certificates = [ { cert = \"a.pem\", key = \"a.key\" } ] }";
    let p = Proxy::start_in(&dir.path, &pp_config(&[b.addr()], "", LOOPBACK, &[("tls_handshake", "3s")], tls));
    let opts = TlsOpts::verified(&ca, "a.example.test");
    for (header, client) in [
        (v1("203.0.113.7", "192.0.2.1", 40000, 443), "203.0.113.7"),
        (v2([203, 0, 113, 9], [192, 0, 2, 1], 40001, 443), "203.0.113.9"),
    ] {
        let mut c =
            TlsClient::connect_after(p.addr("public"), &header, how, &opts).expect("handshake after the header");
        let r = c.get("/tls");
        assert_eq!((r.status, r.text()), (200, "b /tls\n".to_string()));
        let rec = b.wait_requests(1).pop().expect("a request");
        assert_eq!(rec.headers_named("x-forwarded-for").last().map(String::as_str), Some(client));
        assert_eq!(rec.header("x-real-ip").as_deref(), Some(client), "{}", rec.raw_head);
        assert_eq!(rec.header("x-forwarded-proto").as_deref(), Some("https"), "{}", rec.raw_head);
    }
}

#[test]
fn a_proxy_header_comes_before_the_tls_handshake() {
    proxy_header_then_tls(Preface::Alone);
}

#[test]
fn a_proxy_header_and_the_client_hello_in_one_packet() {
    proxy_header_then_tls(Preface::WithHello);
}

/// Ringway `front` (one worker, so one pool) sends `send_proxy_protocol =
/// version` to ringway `back`, which reads it from 127.0.0.1; clients talk
/// PROXY to the front too, so each client's address is a made-up one.
fn front_and_back(version: &str) {
    let b = RecordingBackend::echo_id("b");
    let back = Proxy::start(&pp_config(&[b.addr()], "", LOOPBACK, &[], ""));
    let inner = back.addr("public");
    let front_text = pp_config(&[inner], &format!("send_proxy_protocol = \"{version}\""), LOOPBACK, &[], "")
        .replace("threads = 2", "threads = 1");
    let front = Proxy::start(&front_text);
    let connects = format!("ringway_upstream_connects_total{{server=\"{inner}\"}}");
    let open_at_back = "ringway_connections{listener=\"public\"}";

    let (mut c1, r) = with_header(front.addr("public"), &v1("198.51.100.9", "192.0.2.1", 50001, 80), &get_req("/a"));
    assert_eq!((r.status, r.text()), (200, "b /a\n".to_string()), "{}", r.raw_head);
    assert_eq!(c1.get("/b").text(), "b /b\n");
    wait_series(&front, &connects, 1.0);
    wait_series(&back, open_at_back, 1.0);

    // Another client: a connection of its own, though one to the same
    // server sits idle in the pool.
    let (_c2, r) = with_header(front.addr("public"), &v1("198.51.100.10", "192.0.2.1", 50002, 80), &get_req("/c"));
    assert_eq!(r.text(), "b /c\n");
    assert_eq!(c1.get("/d").text(), "b /d\n");
    wait_series(&front, &connects, 2.0);
    wait_series(&back, open_at_back, 2.0);

    let seen = b.wait_requests(4);
    let got: Vec<(String, Vec<String>, Option<String>)> = seen
        .iter()
        .map(|r| (r.target().to_string(), r.headers_named("x-forwarded-for"), r.header("x-real-ip")))
        .collect();
    let want = |t: &str, ip: &str| (t.to_string(), vec![ip.to_string()], Some(ip.to_string()));
    assert_eq!(
        got,
        [
            want("/a", "198.51.100.9"),
            want("/b", "198.51.100.9"),
            want("/c", "198.51.100.10"),
            want("/d", "198.51.100.9")
        ]
    );
}

#[test]
fn send_proxy_protocol_v2_passes_the_client_to_a_second_ringway() {
    front_and_back("v2");
}

#[test]
fn send_proxy_protocol_v1_passes_the_client_to_a_second_ringway() {
    front_and_back("v1");
}
