//! Request framing and smuggling (hazards A01-A11, A19-A21 in
//! docs/hazards.md): strict Content-Length, Transfer-Encoding, CL.TE / TE.CL,
//! local answers that must not let a body run as a request, pipelining and
//! `Connection: close`. Every case is raw bytes through the real proxy to a
//! recording backend.

use crate::support::*;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

/// Asserts `req` gets exactly one answer with a status in `allowed`, the
/// connection closes, and the backend sees nothing at all.
fn assert_rejected(proxy: &Proxy, b: &RecordingBackend, req: &[u8], allowed: &[u16]) {
    let r = exchange(proxy.addr("public"), req);
    let what = String::from_utf8_lossy(req);
    assert!(!r.bytes.is_empty(), "no answer to {what:?}");
    r.assert_one_and_closed(allowed);
    assert!(b.requests().is_empty(), "{what:?} reached the backend: {:?}", b.requests());
    assert_eq!(b.connections_accepted(), 0, "{what:?} opened an upstream connection");
}

/// After a rejection run, the proxy still serves, and no smuggled request
/// ever reached the backend.
fn assert_canary(proxy: &Proxy, b: &RecordingBackend) {
    let r = get(proxy.addr("public"), "/canary");
    assert_eq!((r.status, r.text()), (200, "b /canary\n".to_string()));
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/canary"], "backend saw more than the canary");
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /p HTTP/1.1\r\nHost: h\r\n{headers}\r\n{body}").into_bytes()
}

#[test]
fn content_length_with_leading_zeros_is_decimal_and_forwarded_canonically() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = request(proxy.addr("public"), &post("Content-Length: 005\r\n", "hello"));
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let seen = &b.requests()[0];
    assert_eq!(seen.headers_named("content-length"), ["5"], "{}", seen.raw_head);
    assert_eq!(seen.raw_body, b"hello");
}

#[test]
fn malformed_content_length_is_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for cl in ["+5", "-1", "0x5", "5x", "", "5 5", "1_0", "5.0", "18446744073709551616", "99999999999999999999", "5\t,"]
    {
        let body = format!("hello{SMUGGLED}");
        assert_rejected(&proxy, &b, &post(&format!("Content-Length: {cl}\r\n"), &body), &[400]);
    }
    assert_canary(&proxy, &b);
}

#[test]
fn conflicting_content_lengths_are_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let body = SMUGGLED;
    let cl = body.len();
    for headers in [
        format!("Content-Length: 0\r\nContent-Length: {cl}\r\n"),
        format!("Content-Length: {cl}\r\nContent-Length: 0\r\n"),
        format!("Content-Length: {cl}\r\nX: y\r\nContent-Length: {}\r\n", cl + 1),
        format!("Content-Length: {cl}, 0\r\n"),
    ] {
        assert_rejected(&proxy, &b, &post(&headers, body), &[400]);
    }
    assert_canary(&proxy, &b);
}

#[test]
fn equal_duplicate_content_lengths_collapse_to_one() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(&post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"));
    assert_eq!(r.status, 200, "{}", r.raw_head);
    let seen = &b.requests()[0];
    assert_eq!(seen.headers_named("content-length"), ["5"], "{}", seen.raw_head);
    assert!(seen.header("transfer-encoding").is_none(), "{}", seen.raw_head);
    assert_eq!(seen.raw_body, b"hello");
    // The connection is still in sync.
    assert_eq!(c.get("/next").text(), "b /next\n");
}

#[test]
fn cl_te_smuggling_is_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = body.len();
    for headers in [
        format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"),
        format!("Transfer-Encoding: chunked\r\nContent-Length: {cl}\r\n"),
        format!("Content-Length: {cl}\r\nTransfer-Encoding: CHUNKED\r\n"),
    ] {
        assert_rejected(&proxy, &b, &post(&headers, &body), &[400]);
    }
    assert_canary(&proxy, &b);
}

#[test]
fn te_cl_smuggling_is_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    for headers in
        ["Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"]
    {
        assert_rejected(&proxy, &b, &post(headers, &body), &[400]);
    }
    assert_canary(&proxy, &b);
}

#[test]
fn unknown_or_obfuscated_transfer_codings_are_rejected_never_cl() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    // A body that is a smuggled request if the proxy fell back to
    // Content-Length (or to "no body") and read on.
    let body = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    let values: [&[u8]; 14] = [
        b"xchunked",
        b"chunked, identity",
        b"identity",
        b"gzip",
        b"gzip, chunked",
        b"chunked, gzip",
        b"chunked, chunked",
        b"chunked;ext=1",
        b",chunked",
        b"\x0bchunked",
        b"\x01chunked",
        b"chunked\x11",
        b"\xa0chunked",
        b"\xffchunked",
    ];
    for v in values {
        for with_cl in [false, true] {
            let mut req = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ".to_vec();
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
            if with_cl {
                req.extend_from_slice(b"Content-Length: 5\r\n");
            }
            req.extend_from_slice(b"\r\n");
            req.extend_from_slice(body.as_bytes());
            if v == b",chunked" && !with_cl {
                continue; // a legal one-member list, see its own test
            }
            assert_rejected(&proxy, &b, &req, &[400, 501]);
        }
    }
    assert!(b.requests().iter().all(|r| r.target() != "/smuggled"), "{:?}", b.requests());
}

#[test]
fn comma_chunked_is_rejected_or_forwarded_as_canonical_chunked() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    c.send(&post("Transfer-Encoding: ,chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"));
    let r = c.read_response(false);
    if r.status == 200 {
        assert_eq!(r.text(), "got 5");
        let seen = &b.requests()[0];
        assert_eq!(seen.headers_named("transfer-encoding"), ["chunked"], "{}", seen.raw_head);
        assert!(seen.header("content-length").is_none(), "{}", seen.raw_head);
    } else {
        assert!([400, 501].contains(&r.status), "{}", r.raw_head);
        assert!(c.conn.closed_within(IO_TIMEOUT));
        assert!(b.requests().is_empty());
    }
}

#[test]
fn two_transfer_encoding_lines_are_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let body = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    assert_rejected(&proxy, &b, &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", &body), &[400]);
    assert_rejected(&proxy, &b, &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", &body), &[400, 501]);
    assert_canary(&proxy, &b);
}

#[test]
fn http10_with_transfer_encoding_is_400_and_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let req =
        format!("POST /p HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    assert_rejected(&proxy, &b, req.as_bytes(), &[400]);
    assert_canary(&proxy, &b);
}

/// A proxy where `/admin` is answered 403 locally, `/app` goes to the
/// backend, and everything else is 404.
fn local_answer_proxy(b: &RecordingBackend) -> Proxy {
    proxy_custom(
        &runtime_config(2, &[], &[]),
        b.addr(),
        r#"{ prefix = "/admin", status = 403 }, { prefix = "/app", upstream = "x" }"#,
    )
}

/// Sends `method path` with a body that is a complete request for
/// `/app/smuggled`, expects one `status` answer, then a canary: the body must
/// never have run as a request.
fn local_answer_does_not_run_the_body(method: &str, path: &str, status: u16) {
    let b = RecordingBackend::echo_id("b");
    let proxy = local_answer_proxy(&b);
    let body = "GET /app/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let req = format!("{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(req.as_bytes());
    assert_eq!(r.status, status, "{}", r.raw_head);
    let closing = r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if closing {
        assert!(c.conn.closed_within(IO_TIMEOUT), "Connection: close but the connection stayed open");
        c = Client::connect(proxy.addr("public"));
    }
    let r = c.get("/app/canary");
    assert_eq!((r.status, r.text()), (200, "b /app/canary\n".to_string()), "the body ran as a request");
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/app/canary"], "the body of a locally answered request reached the backend");
}

#[test]
fn local_403_with_a_body_does_not_run_the_body_as_a_request() {
    local_answer_does_not_run_the_body("POST", "/admin", 403);
    local_answer_does_not_run_the_body("GET", "/admin/x", 403);
}

#[test]
fn local_404_with_a_body_does_not_run_the_body_as_a_request() {
    local_answer_does_not_run_the_body("POST", "/nowhere", 404);
}

#[test]
fn local_answer_with_a_body_larger_than_the_drain_limit_closes() {
    let b = RecordingBackend::echo_id("b");
    let proxy = local_answer_proxy(&b);
    // Declares 1 MiB, sends a smuggled request as its first bytes.
    let req = format!("POST /admin HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n{SMUGGLED}");
    let r = exchange(proxy.addr("public"), req.as_bytes());
    r.assert_one_and_closed(&[403]);
    assert!(b.requests().is_empty(), "{:?}", b.requests());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = RecordingBackend::start(|r| ok(&format!("{} {} {}", r.method(), r.target(), r.decoded_body.len())));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    c.send(
        b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\n\
          POST /p2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
          POST /p3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /p4 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let got: Vec<String> = (0..4).map(|_| c.read_response(false).text()).collect();
    assert_eq!(got, ["GET /p1 0", "POST /p2 5", "POST /p3 3", "GET /p4 0"]);
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/p1", "/p2", "/p3", "/p4"]);
}

#[test]
fn nothing_is_processed_after_connection_close() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let r = exchange(
        proxy.addr("public"),
        b"GET /c1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /c2 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    r.assert_one_and_closed(&[200]);
    assert!(r.text().ends_with("b /c1\n"), "{:?}", r.text());
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/c1"], "a request after Connection: close reached the backend");
    assert!(b.requests()[0].header("connection").is_none(), "close must not be forwarded upstream");
}

#[test]
fn client_half_close_after_the_request_still_gets_the_response() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    let raw = send_raw_opts(proxy.addr("public"), b"GET /half HTTP/1.1\r\nHost: h\r\n\r\n", true);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(text.ends_with("b /half\n"), "{text:?}");
}
