//! Issue 11: the edge holes found when ringway was tried as an attacker
//! would, each against the real binary and real loopback backends (some of
//! them scripted to be hostile): h2c upgrade smuggling, `;` path parameters
//! past a refused prefix, early responses from a backend, request-line
//! strictness, and header names with underscores.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The seed setup's shape: `/` and `/app1` proxied, `/admin` refused; an
/// admin listener for metrics; `http` is the `[http]` table's body.
fn seed_proxy(root: &RecordingBackend, app1: &RecordingBackend, http: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[http]
{http}

[upstreams.root]
servers = ["{root}"]

[upstreams.app1]
servers = ["{app1}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [
  {{ prefix = "/", upstream = "root" }},
  {{ prefix = "/app1", upstream = "app1" }},
  {{ prefix = "/admin", status = 403 }},
]
"#,
        header = runtime_config(2, &[], &[]),
        root = root.addr(),
        app1 = app1.addr(),
    ))
}

/// A counter from the admin `/metrics` text, summed over its label sets.
fn metric(proxy: &Proxy, name: &str) -> u64 {
    get(proxy.admin_addr(), "/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

// ------------------------------------------------------------- class 1 --

const H2C_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n";

#[test]
fn an_h2c_upgrade_is_served_as_plain_http_and_never_tunneled() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(H2C_UPGRADE);
    assert_eq!(r.status, 200, "{}", r.raw_head);
    // The connection is still HTTP/1.1: the next request is routed, and the
    // refused prefix is refused.
    assert_eq!(c.get("/admin").status, 403);
    let seen = &root.requests()[0];
    for name in ["upgrade", "http2-settings"] {
        assert!(seen.header(name).is_none(), "{name} reached the backend: {}", seen.raw_head);
    }
    assert!(seen.header("connection").is_none_or(|v| !v.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(root.requests().len(), 1);
    assert_eq!(metric(&proxy, "ringway_upgrades_stripped_total"), 1);
}

#[test]
fn only_the_configured_protocols_of_an_offer_are_forwarded() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    let r = request(
        proxy.addr("public"),
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket/13\r\nConnection: upgrade\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(root.requests()[0].header("upgrade").as_deref(), Some("WebSocket/13"));
    // With no protocol allowed, even WebSocket is served as plain HTTP.
    let proxy = seed_proxy(&root, &app1, "upgrades = []");
    let r = request(
        proxy.addr("public"),
        b"GET /y HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(root.requests()[1].header("upgrade").is_none(), "{}", root.requests()[1].raw_head);
}

/// A hostile backend: answers every request with `101` to `protocol` and
/// then echoes raw bytes; counts the bytes that reached it after the head.
fn switching_backend(protocol: &'static str, tunneled: Arc<AtomicUsize>) -> RecordingBackend {
    RecordingBackend::start(move |_| {
        let tunneled = Arc::clone(&tunneled);
        Reply::Takeover(Box::new(move |early, s| {
            let head =
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {protocol}\r\nConnection: Upgrade\r\n\r\n");
            s.write_all(head.as_bytes())?;
            tunneled.fetch_add(early.len(), Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tunneled.fetch_add(n, Ordering::SeqCst);
                s.write_all(&buf[..n])?;
            }
            Ok(())
        }))
    })
}

#[test]
fn a_101_the_client_was_not_promised_is_a_502_and_no_tunnel() {
    for protocol in ["h2c", "websocket"] {
        let tunneled = Arc::new(AtomicUsize::new(0));
        let root = switching_backend(protocol, Arc::clone(&tunneled));
        let app1 = RecordingBackend::echo_id("app1");
        let proxy = seed_proxy(&root, &app1, "");
        // An h2c offer (stripped) followed at once by what would ride the
        // tunnel: a request for the refused prefix.
        let mut bytes = H2C_UPGRADE.to_vec();
        bytes.extend_from_slice(b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = exchange(proxy.addr("public"), &bytes);
        assert_eq!(r.statuses().first(), Some(&502), "101 {protocol}: {:?}", r.text());
        assert!(!r.text().contains(" 101 "), "{:?}", r.text());
        assert!(r.closed, "the connection must close after the 502");
        assert_eq!(tunneled.load(Ordering::SeqCst), 0, "bytes reached the backend through a tunnel");
        // And a plain request (no Upgrade at all) answered with 101.
        let r = exchange(proxy.addr("public"), b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.statuses(), [502], "{:?}", r.text());
        assert!(root.wait_until(|_, closed| closed >= 2), "the upstream connections must be closed");
    }
}

// ------------------------------------------------------------- class 2 --

#[test]
fn path_parameters_do_not_get_past_a_refused_prefix() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    let addr = proxy.addr("public");
    for path in [
        "/admin;x",
        "/admin;/x",
        "/admin;",
        "/admin;v=1/",
        "/admin%3Bx",
        "/admin%3bx",
        "/ADMIN;x",
        "/app1/..;/admin",
        "/app1/%2e%2e;x/admin",
        "/;x/admin",
        "/.;/admin",
    ] {
        assert_eq!(get(addr, path).status, 403, "{path}");
    }
    assert!(root.requests().is_empty() && app1.requests().is_empty(), "{:?}", root.requests());
    // Parameters still reach the route's backend, kept in the path.
    let r = get(addr, "/app1;jsessionid=42/x");
    assert_eq!(r.text(), "app1 /app1;jsessionid=42/x\n");
}

#[test]
fn path_params_refuse_answers_400() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "path_params = \"refuse\"");
    for path in ["/app1;x", "/x%3By", "/admin;"] {
        assert_eq!(get(proxy.addr("public"), path).status, 400, "{path}");
    }
    assert_eq!(get(proxy.addr("public"), "/app1/x").status, 200);
}

// ------------------------------------------------------------- class 4 --

#[test]
fn a_space_inside_the_target_is_400_not_505() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    exchange(proxy.addr("public"), b"GET /app1 x HTTP/1.1\r\nHost: h\r\n\r\n").assert_one_and_closed(&[400]);
    exchange(proxy.addr("public"), b"GET /app1 HTTP/2.0\r\nHost: h\r\n\r\n").assert_one_and_closed(&[505]);
}

#[test]
fn absolute_form_without_host_is_400() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    exchange(proxy.addr("public"), b"GET http://t/app1 HTTP/1.1\r\n\r\n").assert_one_and_closed(&[400]);
    assert!(app1.requests().is_empty());
}

#[test]
fn options_with_an_empty_path_is_forwarded_as_asterisk() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    let r = request(proxy.addr("public"), b"OPTIONS http://t HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(root.requests()[0].request_line(), "OPTIONS * HTTP/1.1");
}

#[test]
fn bytes_that_cannot_start_a_request_are_refused_at_once() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    // A 10 s header deadline: an answer within 3 s is the early refusal.
    let proxy = seed_proxy(&root, &app1, "");
    let client_hello: &[u8] = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03\x8a\x1f";
    for (what, bytes) in [
        ("TLS ClientHello", client_hello),
        ("binary garbage", &b"\x00\x01\x02\xff\xfe"[..]),
        ("lower-case method", &b"get / HTTP/1.1\r\nHost"[..]),
        ("non-token method byte", &b"GE(T / HT"[..]),
        ("control byte in the target", &b"GET /a\x01b HT"[..]),
    ] {
        let started = Instant::now();
        let r = exchange(proxy.addr("public"), bytes);
        let took = started.elapsed();
        r.assert_one_and_closed(&[400]);
        assert!(took < Duration::from_secs(3), "{what}: answered after {took:?}");
    }
    assert_eq!(metric(&proxy, "ringway_request_lines_refused_total"), 5);
    assert!(root.requests().is_empty());
}

// ------------------------------------------------------------- class 5 --

#[test]
fn underscored_header_names_are_dropped_by_default() {
    let root = RecordingBackend::echo_id("root");
    let app1 = RecordingBackend::echo_id("app1");
    let proxy = seed_proxy(&root, &app1, "");
    let spoof =
        b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX-Kept: 1\r\n\r\n";
    assert_eq!(request(proxy.addr("public"), spoof).status, 200);
    let seen = &root.requests()[0];
    assert!(!seen.raw_head.contains("6.6.6.6") && !seen.raw_head.contains("https"), "{}", seen.raw_head);
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-kept").as_deref(), Some("1"));
    assert_eq!(metric(&proxy, "ringway_header_fields_dropped_total"), 2);

    let proxy = seed_proxy(&root, &app1, "underscores_in_headers = \"reject\"");
    exchange(proxy.addr("public"), spoof).assert_one_and_closed(&[400]);
    let proxy = seed_proxy(&root, &app1, "underscores_in_headers = \"pass\"");
    assert_eq!(request(proxy.addr("public"), spoof).status, 200);
    assert_eq!(root.requests().last().and_then(|r| r.header("x_forwarded_for")).as_deref(), Some("6.6.6.6"));
}

// ------------------------------------------------------------- class 3 --

/// A backend that answers 413 as soon as it has a request head, without
/// reading the body; then closes at once (`close`) or holds the connection
/// open, unread, until the test ends.
struct EarlyBackend {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

const EARLY_BODY: &str = "too large, said early";

impl EarlyBackend {
    fn start(close: bool) -> EarlyBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let (h, st) = (Arc::clone(&h), Arc::clone(&st));
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 413 Payload Too Large\r\nContent-Length: {}\r\n{}\r\n{EARLY_BODY}",
                        EARLY_BODY.len(),
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    let _ = s.write_all(resp.as_bytes());
                    if !close {
                        let until = Instant::now() + Duration::from_secs(30);
                        while !st.load(Ordering::SeqCst) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                });
            }
        });
        EarlyBackend { addr, heads, stop }
    }
}

impl Drop for EarlyBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Uploads `size` bytes (Content-Length or chunked) while reading the
/// response; returns the raw response bytes and whether the proxy closed.
fn upload(addr: SocketAddr, size: usize, chunked: bool) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let head = if chunked {
        "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n")
    };
    let mut w = s.try_clone().expect("clone");
    // A proxy that stops reading the body and never closes must fail the
    // test below, not block this writer (and the join) forever.
    w.set_write_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let piece = vec![b'x'; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(piece.len());
            let ok = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| w.write_all(&piece[..n]))
                    .and_then(|()| w.write_all(b"\r\n"))
            } else {
                w.write_all(&piece[..n])
            };
            if ok.is_err() {
                return;
            }
            left -= n;
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    // Read one response (Content-Length framed); after a `Connection:
    // close` one, also wait for the close.
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut closed = false;
    loop {
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let complete = got.len() >= end + 4 + len;
            if complete && !text[..end].contains("connection: close") {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    // Shut down, not just dropped: the writer's clone keeps the socket open,
    // and a writer blocked on a proxy that stopped reading must end too.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    (got, closed)
}

#[test]
fn an_early_response_reaches_the_client_and_is_not_a_server_failure() {
    for close in [true, false] {
        let backend = EarlyBackend::start(close);
        // `max_fails = 1`: one failure would take the only server out.
        let proxy = Proxy::start(&format!(
            r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.up]
servers = ["{addr}"]
max_fails = 1
fail_timeout = "60s"
# The keep-open backend never reads a body, even one sent whole before it
# answered: a pooled connection to it would hang the next case.
keepalive = 0

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "up" }} ]
"#,
            header = runtime_config(1, &[], &[]),
            addr = backend.addr,
        ));
        let mut cases = 0;
        for size in [16 * 1024, 1 << 20, 64 << 20] {
            for chunked in [false, true] {
                let what = format!("close={close} size={size} chunked={chunked}");
                let (got, closed) = upload(proxy.addr("public"), size, chunked);
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with("HTTP/1.1 413 "), "{what}: {text:?}");
                assert!(text.ends_with(EARLY_BODY), "{what}: {text:?}");
                // A body the kernel's buffers took whole was sent before
                // the answer was read: then the connection may stay open.
                // 64 MiB never fits, so that answer is early, and closes.
                let says_close = text.to_ascii_lowercase().contains("connection: close");
                assert!(says_close || size < 64 << 20, "{what}: {text:?}");
                assert!(closed || !says_close, "{what}: the client connection must close after an early response");
                cases += 1;
                assert_eq!(backend.heads.load(Ordering::SeqCst), cases, "{what}: retried or lost");
            }
        }
        assert_eq!(metric(&proxy, "ringway_retries_total"), 0);
        assert!(metric(&proxy, "ringway_early_responses_total") >= 2, "the 64 MiB uploads were answered early");
        let text = get(proxy.admin_addr(), "/metrics").text();
        let health = text.lines().find(|l| l.starts_with("ringway_upstream_health{")).unwrap_or_default();
        assert!(health.ends_with(" 1"), "close={close}: the server was marked down: {health}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("ringway_upstream_requests_total") && !l.contains("outcome=\"success\"")),
            "close={close}: an early response counted as a failure:\n{text}"
        );
    }
}
