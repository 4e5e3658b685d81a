//! Chunked request bodies (hazards A12-A18 in docs/hazards.md): malformed
//! size lines, extensions, data terminators and trailers are refused with 400
//! and a close, and the backend never gets a complete request out of them;
//! valid bodies reach the backend as canonical chunks without extensions or
//! trailer fields, and trailers never become header fields.

use crate::support::*;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

fn chunked_post(body: &[u8]) -> Vec<u8> {
    let mut req = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(body);
    req
}

/// Sends a chunked POST with a malformed `body`: the client gets a 400 (or
/// just a close) and the connection closes; every upstream connection the
/// proxy opened is closed and carried no complete request.
fn assert_bad_body(proxy: &Proxy, b: &RecordingBackend, body: &[u8]) {
    let what = String::from_utf8_lossy(body).to_string();
    let r = exchange(proxy.addr("public"), &chunked_post(body));
    assert!(r.closed, "{what:?}: the proxy did not close the client connection, got {:?}", r.text());
    let statuses = r.statuses();
    assert!(statuses.is_empty() || statuses == [400], "{what:?}: expected a 400 or a bare close, got {:?}", r.text());
    assert!(
        b.wait_until(|_, closed| closed == b.connections_accepted()),
        "{what:?}: an upstream connection stayed open ({} accepted, {} closed)",
        b.connections_accepted(),
        b.connections_closed()
    );
    let seen = b.requests();
    assert!(seen.iter().all(|r| !r.complete), "{what:?}: the backend got a complete request: {seen:?}");
    assert!(seen.iter().all(|r| r.target() != "/smuggled"), "{what:?}: smuggled request reached the backend");
}

fn bad_body_cases(cases: &[&[u8]]) {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_to(&b);
    for body in cases {
        assert_bad_body(&proxy, &b, body);
    }
    // The proxy still works, and only the canary completed.
    let r = get(proxy.addr("public"), "/canary");
    assert_eq!(r.text(), "b /canary\n");
    let complete: Vec<String> = b.requests().iter().filter(|r| r.complete).map(|r| r.target().to_string()).collect();
    assert_eq!(complete, ["/canary"]);
}

#[test]
fn empty_chunk_size_is_400() {
    let smuggle = format!("\r\n\r\n{SMUGGLED}");
    bad_body_cases(&[b"\r\n5\r\nhello\r\n0\r\n\r\n", smuggle.as_bytes(), b"5\r\nhello\r\n\r\n0\r\n\r\n"]);
}

#[test]
fn extension_without_size_digits_is_400() {
    let smuggle = format!(";a=b\r\n\r\n{SMUGGLED}");
    bad_body_cases(&[smuggle.as_bytes(), b";\r\nhello\r\n0\r\n\r\n"]);
}

#[test]
fn bare_lf_or_ctl_in_an_extension_is_400() {
    bad_body_cases(&[
        b"5;a\nhello\r\n0\r\n\r\n",
        b"5;a\nXXXXX\r\n0\r\n\r\n",
        b"2;\nxx\r\n45\r\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5;\x00ext\r\nhello\r\n0\r\n\r\n",
        b"5\r\r;a\r\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn overlong_extension_is_refused() {
    let mut body = b"1;".to_vec();
    body.extend(std::iter::repeat_n(b'a', 64 * 1024));
    body.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    bad_body_cases(&[&body]);
}

#[test]
fn overflowing_chunk_size_is_400() {
    bad_body_cases(&[
        b"10000000000000000\r\nhello\r\n0\r\n\r\n",
        b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\nfffffffffffffffff0\r\nx\r\n0\r\n\r\n",
    ]);
}

#[test]
fn signed_prefixed_or_padded_chunk_size_is_400() {
    bad_body_cases(&[
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"-0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 6\r\nhello\r\n0\r\n\r\n",
        b"0_2e\r\nhello\r\n0\r\n\r\n",
        b"Z\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn missing_crlf_after_chunk_data_is_400() {
    let smuggle = format!("5\r\nhelloXX0\r\n\r\n{SMUGGLED}");
    bad_body_cases(&[
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        smuggle.as_bytes(),
        b"3\r\nhello\r\n0\r\n\r\n",
    ]);
}

#[test]
fn malformed_or_oversized_trailers_are_400() {
    let mut huge = b"5\r\nhello\r\n0\r\n".to_vec();
    for i in 0..40 {
        huge.extend_from_slice(format!("X-T{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    bad_body_cases(&[
        &huge,
        b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX : y\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: y\r\n continued\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
    ]);
}

#[test]
fn valid_extensions_and_trailers_are_forwarded_canonically_and_never_as_headers() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    // Written in pieces: the last chunk and the trailers arrive on their own.
    c.send(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Evil\r\n\r\n");
    c.send(b"1;a=b\r\nx\r\n000A;name=\"quoted;\\\"value\"\r\n0123456789\r\n");
    c.send(b"0;last\r\n");
    c.send(b"Content-Length: 5\r\nX-Evil: 1\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n");
    c.send(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "got 11".to_string()));
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "got 0".to_string()), "the request after the trailers");

    let seen = b.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = &seen[0];
    assert_eq!(first.decoded_body, b"x0123456789");
    assert_eq!(first.headers_named("transfer-encoding"), ["chunked"], "{}", first.raw_head);
    assert!(first.header("content-length").is_none(), "{}", first.raw_head);
    assert!(first.header("x-evil").is_none() && first.header("trailer").is_none(), "{}", first.raw_head);
    assert_eq!(first.headers_named("host"), ["h"], "{}", first.raw_head);
    // Canonical: bare hex sizes without leading zeros, one last-chunk, no
    // trailer fields (any split of the data is fine).
    let raw = String::from_utf8_lossy(&first.raw_body).to_string();
    let mut rest: &[u8] = &first.raw_body;
    for _ in 0..100 {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("size line");
        let line = &rest[..eol];
        assert!(!line.is_empty() && line.iter().all(u8::is_ascii_hexdigit), "non-canonical size in {raw:?}");
        let n = usize::from_str_radix(std::str::from_utf8(line).expect("ascii"), 16).expect("hex");
        rest = &rest[eol + 2..];
        if n == 0 {
            assert_eq!(rest, b"\r\n", "trailers or junk after the last chunk: {raw:?}");
            break;
        }
        assert!(!line.starts_with(b"0"), "leading zero in {raw:?}");
        rest = &rest[n + 2..];
    }
    for leak in ["a=b", "quoted", "last", "X-Evil", "evil"] {
        assert!(!raw.contains(leak), "{leak} reached the backend in {raw:?}");
    }
    assert_eq!(seen[1].target(), "/after");
    assert!(seen[1].header("x-evil").is_none());
}

#[test]
fn a_chunked_body_split_across_many_writes_arrives_whole() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let body = b"4\r\nabcd\r\n1;e=1\r\nz\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    c.send(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in body.chunks(3) {
        c.send(piece);
    }
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "got 21".to_string()));
    assert_eq!(b.requests()[0].decoded_body, b"abcdz0123456789abcdef");
}
