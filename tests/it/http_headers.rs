//! Start line and header hygiene (hazards A06, B01-B10 in docs/hazards.md):
//! malformed field lines, Host rules, methods, versions, request-target forms
//! and the target length limit. Raw bytes through the real proxy.

use crate::support::*;

/// One rejection on a fresh connection: exactly one answer with a status in
/// `allowed`, then a close; nothing reached the backend.
fn assert_rejected(proxy: &Proxy, b: &RecordingBackend, req: &[u8], allowed: &[u16]) {
    let what = String::from_utf8_lossy(req).to_string();
    let r = exchange(proxy.addr("public"), req);
    assert!(!r.bytes.is_empty(), "no answer to {what:?}");
    r.assert_one_and_closed(allowed);
    assert!(b.requests().is_empty(), "{what:?} reached the backend: {:?}", b.requests());
}

fn with_field(line: &[u8]) -> Vec<u8> {
    let mut req = b"GET /f HTTP/1.1\r\nHost: h\r\n".to_vec();
    req.extend_from_slice(line);
    req.extend_from_slice(b"\r\n\r\n");
    req
}

/// Forwards `req` and returns what the backend saw (status must be 200).
fn forwarded(req: &[u8]) -> Recorded {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = request(proxy.addr("public"), req);
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let mut seen = b.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen.remove(0)
}

#[test]
fn malformed_field_lines_are_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let lines: [&[u8]; 17] = [
        b"X-A : 1",
        b"Transfer-Encoding : chunked",
        b"Content-Length\t: 0",
        b"X: y\r\n Transfer-Encoding: chunked",
        b"X: y\r\n\tmore",
        b"X: a\x00b",
        b"X: a\rb",
        b"X: \x01",
        b"X: a\x7fb",
        b"X: a\x1bb",
        b": empty-name",
        b"X(y: 1",
        b"X@y: 1",
        b"X\"y: 1",
        b"Header\x85: v",
        b"Foo bar",
        b"Content-Length 10",
    ];
    for line in lines {
        assert_rejected(&proxy, &b, &with_field(line), &[400]);
    }
    // Whitespace before the first field, bare CR in the start line.
    assert_rejected(&proxy, &b, b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", &[400]);
    assert_rejected(&proxy, &b, b"GET / HTTP/1.1\r\n\tX: 1\r\nHost: h\r\n\r\n", &[400]);
    assert_rejected(&proxy, &b, b"GET / HTTP/1.1\rHost: h\r\n\r\n", &[400]);
    // The proxy still works.
    assert_eq!(get(proxy.addr("public"), "/ok").text(), "b /ok\n");
}

#[test]
fn bare_lf_line_endings_are_refused_or_normalized() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = exchange(proxy.addr("public"), b"GET /lf HTTP/1.1\nHost: h\nConnection: close\n\n");
    if r.statuses().first() == Some(&200) {
        let seen = &b.requests()[0];
        assert!(!seen.raw_head.replace("\r\n", "").contains('\n'), "bare LF forwarded: {:?}", seen.raw_head);
    } else {
        r.assert_one_and_closed(&[400]);
        assert!(b.requests().is_empty());
    }
}

#[test]
fn host_rules_for_http11() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for req in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:99x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    ] {
        assert_rejected(&proxy, &b, req, &[400]);
    }
}

#[test]
fn http10_without_host_is_served() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = exchange(proxy.addr("public"), b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.statuses(), [200], "{:?}", r.text());
    assert!(r.text().ends_with("b /old\n"), "{:?}", r.text());
    assert!(r.closed, "HTTP/1.0 without keep-alive must close");
    let seen = &b.requests()[0];
    assert_eq!(seen.request_line(), "GET /old HTTP/1.1");
    assert!(seen.headers_named("host").len() <= 1, "{}", seen.raw_head);
}

/// Issue 11, class 4: methods are case-sensitive upper-case tokens (as
/// nginx requires); `get` and `PoSt` are refused, not forwarded as other
/// methods a backend might fold to GET or POST.
#[test]
fn lowercase_method_is_400() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for req in
        [&b"get /m HTTP/1.1\r\nHost: h\r\n\r\n"[..], b"PoSt /m HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"]
    {
        assert_rejected(&proxy, &b, req, &[400]);
    }
}

#[test]
fn non_token_method_is_400() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for req in [&b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n"[..], b"GE\x00T / HTTP/1.1\r\nHost: h\r\n\r\n"] {
        assert_rejected(&proxy, &b, req, &[400]);
    }
}

#[test]
fn connect_is_refused() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    assert_rejected(&proxy, &b, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", &[405, 501]);
    assert_rejected(&proxy, &b, b"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n", &[400, 405, 501]);
}

#[test]
fn unsupported_versions_are_505() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let mut wrong = Vec::new();
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/0.9"] {
        let r = exchange(proxy.addr("public"), format!("GET / {v}\r\nHost: h\r\n\r\n").as_bytes());
        if r.statuses() != [505] || !r.closed {
            wrong.push((v, r.text()));
        }
    }
    assert!(wrong.is_empty(), "expected 505 and a close for: {wrong:#?}");
    assert!(b.requests().is_empty());
}

#[test]
fn malformed_versions_are_400_or_505() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for v in ["http/1.1", "HTTP/1", "HTTP/1.10", "HTTP/1.1 x", "HTTP/11", "HTTP/4294967295.255"] {
        let req = format!("GET / {v}\r\nHost: h\r\n\r\n");
        assert_rejected(&proxy, &b, req.as_bytes(), &[400, 505]);
    }
}

#[test]
fn request_line_shape_is_strict() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for req in [
        &b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET /\tHTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
        b"GET /\r\nHost: h\r\n\r\n",
    ] {
        assert_rejected(&proxy, &b, req, &[400, 505]);
    }
}

#[test]
fn fragment_in_target_is_400() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for t in ["/a#frag", "/a?q=1#f", "/#", "http://h/a#f"] {
        let req = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_rejected(&proxy, &b, req.as_bytes(), &[400]);
    }
}

#[test]
fn asterisk_form_is_only_for_options_and_forwarded_as_is() {
    let seen = forwarded(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(seen.request_line(), "OPTIONS * HTTP/1.1");
    assert_eq!(seen.headers_named("host"), ["h"]);

    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    assert_rejected(&proxy, &b, b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", &[400]);
}

#[test]
fn absolute_form_replaces_host_with_its_authority() {
    let seen = forwarded(b"GET http://authority.example/abs/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(seen.request_line(), "GET /abs/p?q=1 HTTP/1.1");
    assert_eq!(seen.headers_named("host"), ["authority.example"], "{}", seen.raw_head);
    let seen = forwarded(b"GET HTTP://Auth.Example:8080 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(seen.target(), "/");
    assert_eq!(seen.headers_named("host"), ["Auth.Example:8080"], "{}", seen.raw_head);
}

#[test]
fn target_longer_than_max_target_bytes_is_414() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_custom(
        &runtime_config(2, &[], &[("max_target_bytes", "100")]),
        b.addr(),
        r#"{ prefix = "/", upstream = "x" }"#,
    );
    let at_limit = format!("/{}", "a".repeat(99));
    let r = get(proxy.addr("public"), &at_limit);
    assert_eq!(r.status, 200, "a target of exactly the limit is fine");
    assert_eq!(b.requests()[0].target(), at_limit);

    let over = format!("/{}", "a".repeat(100));
    let r = exchange(proxy.addr("public"), format!("GET {over} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    r.assert_one_and_closed(&[414]);
    let long = format!("/{}?{}", "b".repeat(50), "q".repeat(5000));
    let r = exchange(proxy.addr("public"), format!("GET {long} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    r.assert_one_and_closed(&[414]);
    assert_eq!(b.requests().len(), 1, "{:?}", b.requests());
}
