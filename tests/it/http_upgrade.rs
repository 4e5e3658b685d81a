//! Upgrade (hazard C05 in docs/hazards.md): only a 101 from the backend, to a
//! client that asked for that protocol, turns the connection into a two-way
//! byte tunnel. A 200 with `Upgrade` is not an upgrade; an unrequested 101 is
//! a 502.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

const UPGRADE_REQUEST: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// After the 101: sends `srv-hello`, then echoes every byte (those that
/// arrived with the request first) until the client sends `bye` or closes.
/// Everything received after the head is appended to `tunnel_in`.
fn echo_after_101(early: Vec<u8>, s: &mut TcpStream, tunnel_in: &Mutex<Vec<u8>>) -> std::io::Result<()> {
    s.write_all(SWITCHING)?;
    s.write_all(b"srv-hello")?;
    let mut pending = early;
    let mut tmp = [0u8; 64 * 1024];
    for _ in 0..100_000 {
        if !pending.is_empty() {
            tunnel_in.lock().expect("lock").extend_from_slice(&pending);
            s.write_all(&pending)?;
            if pending.ends_with(b"bye") {
                return Ok(());
            }
            pending.clear();
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&tmp[..n]);
    }
    Ok(())
}

fn ws_backend(tunnel_in: Arc<Mutex<Vec<u8>>>) -> RecordingBackend {
    RecordingBackend::start(move |r| match r.target() {
        "/ws" => {
            let t = Arc::clone(&tunnel_in);
            Reply::Takeover(Box::new(move |early, s| echo_after_101(early, s, &t)))
        }
        "/ws200" => Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nno".to_vec(),
        ),
        "/unasked" => Reply::Bytes(SWITCHING.to_vec()),
        _ => ok(&format!("http {}", r.target())),
    })
}

/// Reads exactly `n` bytes from the client connection.
fn read_n(c: &mut Conn, n: usize) -> Vec<u8> {
    c.read_exact_vec(n).expect("tunnel bytes")
}

#[test]
fn websocket_upgrade_becomes_a_two_way_tunnel() {
    let tunnel_in = Arc::new(Mutex::new(Vec::new()));
    let b = ws_backend(Arc::clone(&tunnel_in));
    let proxy = proxy_to(&b);
    let mut c = Conn::connect(proxy.addr("public"));
    c.write(UPGRADE_REQUEST);
    let head = c.read_until(b"\r\n\r\n", 4096).expect("read").expect("101 head");
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    let fields = parse_fields(&head);
    let get = |n: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.to_ascii_lowercase());
    assert_eq!(get("upgrade").as_deref(), Some("websocket"), "{head:?}");
    assert_eq!(get("connection").as_deref(), Some("upgrade"), "{head:?}");
    assert!(get("content-length").is_none() && get("transfer-encoding").is_none(), "{head:?}");

    // What the backend saw: one upgrade request, hop-by-hop fields rebuilt.
    let seen = &b.requests()[0];
    assert_eq!(seen.headers_named("connection"), ["upgrade"], "{}", seen.raw_head);
    assert_eq!(seen.headers_named("upgrade"), ["websocket"], "{}", seen.raw_head);
    assert_eq!(seen.headers_named("sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);

    // Server speaks first, then echo both ways, binary included.
    assert_eq!(read_n(&mut c, 9), b"srv-hello");
    c.write(b"ping");
    assert_eq!(read_n(&mut c, 4), b"ping");
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
    c.write(&blob);
    assert!(read_n(&mut c, blob.len()) == blob, "binary echo differs");
    // Bytes that look like HTTP are just bytes in the tunnel.
    let not_http = b"GET /not-http HTTP/1.1\r\nHost: h\r\n\r\n";
    c.write(not_http);
    assert_eq!(read_n(&mut c, not_http.len()), not_http);
    c.write(b"bye");
    assert_eq!(read_n(&mut c, 3), b"bye");
    // The backend closes after `bye`: the client sees the close.
    let rest = read_reply(&mut c);
    assert!(rest.closed && rest.bytes.is_empty(), "{:?}", rest.text());
    assert_eq!(b.requests().len(), 1, "tunnel bytes were parsed as requests: {:?}", b.requests());
    assert!(b.requests().iter().all(|r| r.target() != "/not-http"));
}

#[test]
fn bytes_sent_right_after_the_upgrade_request_reach_the_backend_after_the_head() {
    let tunnel_in = Arc::new(Mutex::new(Vec::new()));
    let b = ws_backend(Arc::clone(&tunnel_in));
    let proxy = proxy_to(&b);
    let mut c = Conn::connect(proxy.addr("public"));
    let mut first = UPGRADE_REQUEST.to_vec();
    first.extend_from_slice(b"EARLY");
    c.write(&first);
    let head = c.read_until(b"\r\n\r\n", 4096).expect("read").expect("101 head");
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{:?}", String::from_utf8_lossy(&head));
    assert_eq!(read_n(&mut c, 9), b"srv-hello");
    assert_eq!(read_n(&mut c, 5), b"EARLY", "early bytes not echoed");
    c.write(b"bye");
    assert_eq!(read_n(&mut c, 3), b"bye");
    assert!(read_reply(&mut c).closed);
    assert_eq!(&tunnel_in.lock().expect("lock")[..], b"EARLYbye");
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn a_200_with_upgrade_is_not_an_upgrade() {
    let b = ws_backend(Arc::new(Mutex::new(Vec::new())));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let mut req = UPGRADE_REQUEST.to_vec();
    req = String::from_utf8(req).expect("ascii").replace("GET /ws ", "GET /ws200 ").into_bytes();
    // The next request follows at once: it must be parsed as HTTP.
    req.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    c.send(&req);
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "no".to_string()), "{}", r.raw_head);
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "http /after".to_string()), "{}", r.raw_head);
    assert_eq!(c.get("/again").text(), "http /again");
    let seen = b.requests();
    let targets: Vec<&str> = seen.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/ws200", "/after", "/again"]);
    // `/after` went through the proxy's HTTP path, not a raw tunnel.
    assert_eq!(seen[1].headers_named("x-forwarded-proto"), ["http"], "{}", seen[1].raw_head);
}

#[test]
fn an_unrequested_101_is_502() {
    let b = ws_backend(Arc::new(Mutex::new(Vec::new())));
    let proxy = proxy_to(&b);
    let r = exchange(proxy.addr("public"), b"GET /unasked HTTP/1.1\r\nHost: h\r\n\r\n");
    r.assert_one_and_closed(&[502]);
}

#[test]
fn upgrade_without_connection_upgrade_is_not_an_upgrade_request() {
    let b = ws_backend(Arc::new(Mutex::new(Vec::new())));
    let proxy = proxy_to(&b);
    // `Upgrade` not named in `Connection` (RFC 9110 §7.8): no upgrade was
    // asked for, so a 101 is unsolicited.
    let r = exchange(proxy.addr("public"), b"GET /unasked HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
    r.assert_one_and_closed(&[502]);
    let seen = &b.requests()[0];
    assert!(seen.header("upgrade").is_none(), "a non-hop Upgrade was forwarded: {}", seen.raw_head);
}

#[test]
fn a_101_to_another_protocol_than_the_one_asked_for_is_502() {
    let b = ws_backend(Arc::new(Mutex::new(Vec::new())));
    let proxy = proxy_to(&b);
    // The client asks for h2c, the backend switches to websocket.
    let r = exchange(
        proxy.addr("public"),
        b"GET /unasked HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    );
    r.assert_one_and_closed(&[502]);
}

#[test]
fn upgrade_from_an_http10_client_is_not_an_upgrade() {
    let b = ws_backend(Arc::new(Mutex::new(Vec::new())));
    let proxy = proxy_to(&b);
    let r = exchange(
        proxy.addr("public"),
        b"GET /unasked HTTP/1.0\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    r.assert_one_and_closed(&[502]);
}
