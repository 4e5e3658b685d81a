//! Message bodies both ways: Content-Length, chunked (re-encoded
//! canonically), close-delimited, bodyless responses, and large streamed
//! bodies in bounded proxy memory.

use crate::support::*;
use std::io::Write;
use std::time::Instant;

/// Backend that answers with the decoded body length.
fn length_echo() -> RecordingBackend {
    RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())))
}

/// Asserts a raw chunked body is canonical: size lines are bare hex (no
/// extensions), one last-chunk, no trailer fields. Returns the decoded bytes.
fn assert_canonical_chunked(raw: &[u8]) -> Vec<u8> {
    let mut rest = raw;
    let mut decoded = Vec::new();
    for _ in 0..1_000_000 {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk-size line");
        let line = std::str::from_utf8(&rest[..eol]).expect("ascii size line");
        assert!(
            !line.is_empty() && line.bytes().all(|b| b.is_ascii_hexdigit()),
            "chunk-size line {line:?} is not bare hex in {:?}",
            String::from_utf8_lossy(raw)
        );
        let size = usize::from_str_radix(line, 16).expect("hex");
        rest = &rest[eol + 2..];
        if size == 0 {
            assert_eq!(rest, b"\r\n", "trailer or junk after the last chunk: {:?}", String::from_utf8_lossy(raw));
            return decoded;
        }
        assert!(size > 0 && line.len() == format!("{size:x}").len(), "non-canonical size {line:?}");
        decoded.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
    panic!("too many chunks");
}

#[test]
fn content_length_request_body_arrives_byte_exact() {
    let b = length_echo();
    let proxy = proxy_to(&b);
    let body: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut req = format!("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    let r = request(proxy.addr("public"), &req);
    assert_eq!((r.status, r.text()), (200, format!("got {}", body.len())));
    let seen = &b.requests()[0];
    assert_eq!(seen.headers_named("content-length"), [body.len().to_string()]);
    assert!(seen.header("transfer-encoding").is_none(), "{}", seen.raw_head);
    assert!(seen.raw_body == body, "raw body differs");
}

#[test]
fn chunked_request_body_is_re_encoded_canonically() {
    let b = length_echo();
    let proxy = proxy_to(&b);
    let part2: Vec<u8> = (0..0x1f3u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n".to_vec();
    req.extend_from_slice(b"3;ext=1\r\nabc\r\n");
    req.extend_from_slice(b"1F3;name=\"quoted value\";flag\r\n");
    req.extend_from_slice(&part2);
    req.extend_from_slice(b"\r\n1\r\nz\r\n0;last=yes\r\nX-T: trailer-value\r\n\r\n");
    let r = request(proxy.addr("public"), &req);
    let mut expected = b"abc".to_vec();
    expected.extend_from_slice(&part2);
    expected.push(b'z');
    assert_eq!((r.status, r.text()), (200, format!("got {}", expected.len())));

    let seen = &b.requests()[0];
    assert_eq!(seen.headers_named("transfer-encoding"), ["chunked"], "{}", seen.raw_head);
    assert!(seen.header("content-length").is_none(), "{}", seen.raw_head);
    assert!(seen.header("trailer").is_none(), "{}", seen.raw_head);
    assert_eq!(seen.decoded_body, expected);
    let raw = String::from_utf8_lossy(&seen.raw_body).to_string();
    for leak in ["ext", "quoted", "flag", "last", "X-T", "trailer-value"] {
        assert!(!raw.contains(leak), "{leak} reached the backend in {raw:?}");
    }
    assert_eq!(assert_canonical_chunked(&seen.raw_body), expected);
}

#[test]
fn chunked_response_is_relayed_as_chunked() {
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 200) as u8 + 30).collect();
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in [&body[..7], &body[7..1031], &body[1031..]] {
        raw.extend_from_slice(format!("{:X};e=1\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\n");
    let b = RecordingBackend::start(move |_| Reply::Bytes(raw.clone()));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.is_chunked(), "{}", r.raw_head);
    assert!(r.header("content-length").is_none(), "{}", r.raw_head);
    assert_eq!(r.body, body);
    assert_eq!(assert_canonical_chunked(&r.raw_body), body);
    // The connection is still in sync.
    assert_eq!(c.get("/").body, body);
}

#[test]
fn content_length_response_is_relayed() {
    let b = RecordingBackend::start(|_| ok("exactly this"));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    for _ in 0..2 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{}", r.raw_head);
        assert_eq!(r.headers_named("content-length"), ["12"]);
        assert!(r.header("transfer-encoding").is_none());
        assert_eq!(r.text(), "exactly this");
    }
}

fn close_delimited_backend(body: &'static [u8]) -> RecordingBackend {
    RecordingBackend::start(move |_| {
        let mut raw = b"HTTP/1.1 200 OK\r\nX-Kind: close-delimited\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        Reply::Close(raw)
    })
}

const CLOSE_BODY: &[u8] = b"no length here, the body ends when the backend closes\n";

#[test]
fn close_delimited_response_reaches_http11_client_chunked() {
    let b = close_delimited_backend(CLOSE_BODY);
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.get("/");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.is_chunked(), "close-delimited body must reach an HTTP/1.1 client chunked:\n{}", r.raw_head);
    assert_eq!(r.body, CLOSE_BODY);
    // Chunked framing lets the client connection stay open.
    let r = c.get("/");
    assert_eq!(r.body, CLOSE_BODY);
    assert_eq!(b.connections_accepted(), 2, "a close-delimited upstream connection must not be reused");
}

#[test]
fn close_delimited_response_reaches_http10_client_close_delimited() {
    let b = close_delimited_backend(CLOSE_BODY);
    let proxy = proxy_to(&b);
    let raw = send_raw(proxy.addr("public"), b"GET / HTTP/1.0\r\nHost: h\r\n\r\n");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let fields = parse_fields(&head);
    assert!(!fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")), "{head}");
    assert!(!fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")), "{head}");
    assert_eq!(&raw[split..], CLOSE_BODY);
}

#[test]
fn head_response_has_no_body() {
    let b = RecordingBackend::start(|r| {
        if r.method() == "HEAD" {
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n".to_vec())
        } else {
            ok("after head")
        }
    });
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.header("transfer-encoding").is_none(), "{}", r.raw_head);
    // No body bytes may follow: the next response must start right away.
    let r = c.get("/next");
    assert_eq!((r.status, r.text()), (200, "after head".to_string()));
}

#[test]
fn no_content_response_has_no_body() {
    let b = RecordingBackend::start(|r| {
        if r.target() == "/204" {
            Reply::Bytes(b"HTTP/1.1 204 No Content\r\nX-Y: z\r\n\r\n".to_vec())
        } else {
            ok("after 204")
        }
    });
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.get("/204");
    assert_eq!(r.status, 204, "{}", r.raw_head);
    assert!(r.header("transfer-encoding").is_none(), "{}", r.raw_head);
    assert!(r.header("content-length").is_none(), "{}", r.raw_head);
    let r = c.get("/next");
    assert_eq!((r.status, r.text()), (200, "after 204".to_string()));
}

const MIB: u64 = 1024 * 1024;
/// Largest allowed growth of the proxy's resident memory during a transfer.
const RSS_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

#[test]
fn large_streamed_response_keeps_proxy_memory_bounded() {
    const TOTAL: u64 = 300 * MIB;
    let b = RecordingBackend::start(|r| {
        if r.target() != "/big" {
            return ok("warm");
        }
        Reply::Stream(Box::new(|s| {
            let pat = pattern();
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes())?;
            for _ in 0..TOTAL / PATTERN_LEN as u64 {
                s.write_all(&pat)?;
            }
            Ok(())
        }))
    });
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    assert_eq!(c.get("/warm").text(), "warm");
    let base = proxy.rss_kib();

    let started = Instant::now();
    c.send(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = c.conn.read_until(b"\r\n\r\n", 1 << 16).expect("head").expect("response");
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let pat = pattern();
    let mut got: u64 = 0;
    let mut mismatch = None;
    let mut peak = base;
    let mut samples = Vec::new();
    let mut next_sample = TOTAL / 8;
    let result = c.conn.stream_exact(TOTAL, |d| {
        let mut d = d;
        while !d.is_empty() {
            let at = (got % PATTERN_LEN as u64) as usize;
            let k = d.len().min(PATTERN_LEN - at);
            if mismatch.is_none() && d[..k] != pat[at..at + k] {
                mismatch = Some(got);
            }
            got += k as u64;
            d = &d[k..];
        }
        if got >= next_sample {
            let rss = proxy.rss_kib();
            samples.push((got / MIB, rss));
            peak = peak.max(rss);
            next_sample += TOTAL / 8;
        }
    });
    if let Err(e) = result {
        panic!("reading the body failed after {got} bytes: {e}");
    }
    let elapsed = started.elapsed();
    eprintln!("300 MiB download in {elapsed:?}; rss base {base} KiB, samples (MiB, KiB) {samples:?}");
    assert_eq!(got, TOTAL, "byte count");
    assert_eq!(mismatch, None, "body differs from the pattern at this offset");
    assert!(samples.len() >= 4, "too few samples: {samples:?}");
    assert!(
        peak.saturating_sub(base) < RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew from {base} KiB to {peak} KiB while streaming: {samples:?}"
    );
}

#[test]
fn large_chunked_upload_keeps_proxy_memory_bounded() {
    const TOTAL: u64 = 200 * MIB;
    let b = RecordingBackend::start_counting(|r| ok(&format!("{} {}", r.body_len, r.body_matches_pattern)));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    assert_eq!(c.get("/warm").text(), "0 true");
    let base = proxy.rss_kib();

    let started = Instant::now();
    c.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    let pat = pattern();
    let mut chunk = format!("{:x}\r\n", pat.len()).into_bytes();
    chunk.extend_from_slice(&pat);
    chunk.extend_from_slice(b"\r\n");
    let blocks = TOTAL / PATTERN_LEN as u64;
    let mut samples = Vec::new();
    let mut peak = base;
    for i in 0..blocks {
        c.conn.stream.write_all(&chunk).expect("write upload chunk");
        if (i + 1) % (blocks / 8) == 0 {
            let rss = proxy.rss_kib();
            samples.push(((i + 1) * PATTERN_LEN as u64 / MIB, rss));
            peak = peak.max(rss);
        }
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response(false);
    let elapsed = started.elapsed();
    eprintln!("200 MiB upload in {elapsed:?}; rss base {base} KiB, samples (MiB, KiB) {samples:?}");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.text(), format!("{TOTAL} true"), "backend's decoded byte count and pattern check");
    let seen = b.requests();
    assert_eq!(seen[1].headers_named("transfer-encoding"), ["chunked"]);
    assert!(
        peak.saturating_sub(base) < RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew from {base} KiB to {peak} KiB while uploading: {samples:?}"
    );
}
