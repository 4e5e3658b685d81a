//! What the backend receives and what the client gets back: Host,
//! X-Forwarded-*, hop-by-hop removal both ways, connection reuse,
//! pipelining, HTTP/1.0 connection handling.

use crate::support::*;
use std::time::Duration;

/// Sends one request through a fresh proxy and returns what the backend saw.
fn forwarded(request: &[u8]) -> Recorded {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = crate::support::request(proxy.addr("public"), request);
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let mut seen = b.requests();
    assert_eq!(seen.len(), 1, "backend requests: {seen:?}");
    seen.remove(0)
}

#[test]
fn host_is_forwarded_as_sent() {
    let r = forwarded(b"GET /h HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n");
    assert_eq!(r.headers_named("host"), ["Example.COM:8080"]);
    assert!(r.request_line() == "GET /h HTTP/1.1", "{}", r.request_line());
}

#[test]
fn absolute_form_sets_host_to_the_authority() {
    let r = forwarded(b"GET http://authority.example:81/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(r.headers_named("host"), ["authority.example:81"]);
    assert_eq!(r.target(), "/p?q=1", "origin-form upstream");
}

/// What the backend saw of `request` through a proxy whose listener has
/// `listener_keys` and whose config ends with `more`.
fn forwarded_with(listener_keys: &str, more: &str, request: &[u8]) -> Recorded {
    let b = RecordingBackend::echo_id("b");
    let proxy = Proxy::start(&format!(
        "[upstreams.x]\nservers = [\"{}\"]\n[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", upstream = \"x\" }} ]\n{listener_keys}\n{more}",
        b.addr()
    ));
    let r = crate::support::request(proxy.addr("public"), request);
    assert_eq!(r.status, 200, "{}", r.raw_head);
    b.wait_requests(1).remove(0)
}

const SPOOFED: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Other: a\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\r\n";

/// By default a client outside the listener's `trusted` cannot put words
/// in the proxy's mouth: its forwarding fields are replaced.
#[test]
fn an_untrusted_clients_forwarding_fields_are_replaced() {
    let r = forwarded(SPOOFED);
    assert_eq!(r.headers_named("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.headers_named("x-real-ip"), ["127.0.0.1"]);
    assert!(r.headers_named("forwarded").is_empty(), "{}", r.raw_head);
    assert_eq!(r.headers_named("x-other"), ["a"]);
    // A trusted list that does not hold the client changes nothing.
    let r = forwarded_with("trusted = [\"10.0.0.0/8\"]", "", SPOOFED);
    assert_eq!(r.headers_named("x-forwarded-for"), ["127.0.0.1"]);
}

/// From a trusted peer (another proxy), the list is appended to and its
/// other fields pass; `[http] forwarded = "append"` trusts everyone.
#[test]
fn x_forwarded_for_appends_for_trusted_peers() {
    for (keys, more) in [("trusted = [\"127.0.0.0/8\"]", ""), ("", "[http]\nforwarded = \"append\"\n")] {
        let r = forwarded_with(keys, more, SPOOFED);
        assert_eq!(r.headers_named("x-forwarded-for"), ["1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"], "{keys}{more}");
        assert_eq!(r.headers_named("x-real-ip"), ["6.6.6.6"]);
        assert_eq!(r.headers_named("forwarded"), ["for=6.6.6.6"]);
    }
}

#[test]
fn x_forwarded_for_is_set_when_absent() {
    let r = forwarded(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.headers_named("x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn x_forwarded_proto_is_replaced() {
    let r = forwarded(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(r.headers_named("x-forwarded-proto"), ["http"]);
    let r = forwarded(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.headers_named("x-forwarded-proto"), ["http"]);
}

#[test]
fn request_hop_by_hop_fields_are_removed_and_others_kept_in_order() {
    let r = forwarded(
        b"GET /hop HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n\
          Keep-Alive: 5\r\nX-B: b\r\nTE: trailers\r\nProxy-Connection: x\r\nUpgrade: foo\r\nX-A: 2\r\n\
          Trailer: X-T\r\nX-C: c\r\n\r\n",
    );
    let names: Vec<String> = r.fields().iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    for gone in ["connection", "x-secret", "keep-alive", "te", "proxy-connection", "upgrade", "trailer"] {
        assert!(!names.iter().any(|n| n == gone), "{gone} reached the backend:\n{}", r.raw_head);
    }
    let kept: Vec<(String, String)> = r
        .fields()
        .into_iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-") && !n.starts_with("X-Forwarded") && n != "X-Real-IP")
        .collect();
    let expected: Vec<(String, String)> = [("X-A", "1"), ("X-B", "b"), ("X-A", "2"), ("X-C", "c")]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(kept, expected, "end-to-end fields in order:\n{}", r.raw_head);
    assert!(r.raw_head.contains("\r\nX-A: 1\r\n") && r.raw_head.contains("\r\nX-A: 2\r\n"), "{}", r.raw_head);
}

#[test]
fn response_hop_by_hop_fields_are_removed() {
    let b = RecordingBackend::start(|_| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\nX-After: 2\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let proxy = proxy_to(&b);
    let r = get(proxy.addr("public"), "/");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.text(), "ok");
    for gone in ["x-internal", "keep-alive", "proxy-connection"] {
        assert!(r.header(gone).is_none(), "{gone} reached the client:\n{}", r.raw_head);
    }
    assert!(r.header("connection").is_none_or(|v| !v.to_ascii_lowercase().contains("x-internal")), "{}", r.raw_head);
    assert_eq!(r.header("x-before"), Some("1"));
    assert_eq!(r.header("x-after"), Some("2"));
}

#[test]
fn keep_alive_client_reuses_one_pooled_upstream_connection() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    for i in 0..3 {
        let r = c.get(&format!("/k{i}"));
        assert_eq!(r.status, 200, "{}", r.raw_head);
        assert_eq!(r.text(), format!("b /k{i}\n"));
        assert!(r.header("connection").is_none(), "HTTP/1.1 keep-alive needs no Connection field: {}", r.raw_head);
    }
    assert_eq!(
        b.connections_accepted(),
        1,
        "three requests on one client connection must share one upstream connection"
    );
    let conns: Vec<usize> = b.requests().iter().map(|r| r.conn_id).collect();
    assert_eq!(conns, [0, 0, 0]);
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    c.send(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n");
    let r1 = c.read_response(false);
    let r2 = c.read_response(false);
    assert_eq!((r1.status, r1.text()), (200, "b /first\n".to_string()));
    assert_eq!((r2.status, r2.text()), (200, "b /second\n".to_string()));
}

#[test]
fn http10_client_without_keep_alive_gets_connection_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.text(), "b /old\n");
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{}", r.raw_head);
    assert!(c.conn.closed_within(Duration::from_secs(5)), "the proxy must close an HTTP/1.0 connection");
    // Upstream is always HTTP/1.1.
    assert_eq!(b.requests()[0].request_line(), "GET /old HTTP/1.1");

    // With keep-alive the connection stays usable.
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(b"GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")), "{}", r.raw_head);
    let r = c.request(b"GET /b HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "b /b\n");
}

/// A keep-alive connection waits for its next request with a read that is
/// cancelled after a short window (about 20-60 ms), then with a readiness
/// poll. Requests that arrive just before, during and after that switch are
/// all served, in order, with no byte lost.
#[test]
fn keep_alive_requests_after_any_pause_are_served_across_the_hot_window() {
    let b = RecordingBackend::echo_id("b");
    requests_across_the_hot_window(&b, &proxy_to(&b));
}

/// The same on the epoll driver, whose cancellation path is its own.
#[test]
fn keep_alive_requests_after_any_pause_are_served_across_the_hot_window_on_epoll() {
    let b = RecordingBackend::echo_id("b");
    let proxy = Proxy::start(&format!(
        r#"[runtime]
threads = 1
driver = "epoll"

[upstreams.a]
servers = ["{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "a" }} ]
"#,
        b.addr()
    ));
    requests_across_the_hot_window(&b, &proxy);
}

fn requests_across_the_hot_window(b: &RecordingBackend, proxy: &Proxy) {
    let mut c = Client::connect(proxy.addr("public"));
    let pauses_ms = [0u64, 1, 5, 15, 19, 21, 25, 30, 35, 39, 41, 45, 55, 60, 65, 80, 120, 0, 0, 30];
    for (i, pause) in pauses_ms.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(*pause));
        let r = c.get(&format!("/p{i}"));
        assert_eq!((r.status, r.text()), (200, format!("b /p{i}\n")), "after a {pause} ms pause");
    }
    // A head split by a pause longer than the window still arrives whole.
    std::thread::sleep(Duration::from_millis(30));
    c.send(b"GET /split HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(70));
    c.send(b"st: h\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "b /split\n".to_string()));
    assert_eq!(b.requests().len(), pauses_ms.len() + 1);
}
