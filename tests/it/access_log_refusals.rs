//! Requests refused before their head was parsed (414, 431, 413, 408, 400)
//! still get an access log line: with the method and target their request
//! line said for certain (`-` or `null` for what it did not), and a
//! duration from their first byte, so a 408 shows the time it waited.

use crate::support::ops::*;
use crate::support::*;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One worker, `client_header` of 1 s, small limits, and an access log in
/// `format` at `log`.
fn logging_proxy(log: &Path, format: &str) -> (Proxy, RecordingBackend) {
    let b = RecordingBackend::echo_id("a");
    let header = runtime_config(
        1,
        &[("client_header", "1s")],
        &[("max_target_bytes", "64"), ("max_header_bytes", "2048"), ("max_headers", "8"), ("max_body_bytes", "10")],
    );
    let p = Proxy::start(&format!(
        "{header}\n[access_log]\npath = \"{}\"\nformat = \"{format}\"\n\n[upstreams.x]\nservers = [\"{}\"]\n\n[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", upstream = \"x\" }} ]\n",
        log.display(),
        b.addr()
    ));
    (p, b)
}

/// The `"REQUEST" STATUS` part of a combined line.
fn request_and_status(line: &str) -> &str {
    let start = line.find("] \"").unwrap_or_else(|| panic!("no request in {line}")) + 2;
    let rest = &line[start..];
    // The quoted request, a space and the three-digit status.
    let end = rest.find(" HTTP/1.1\" ").unwrap_or_else(|| panic!("no protocol in {line}")) + " HTTP/1.1\" 200".len();
    &rest[..end]
}

#[test]
fn refused_heads_log_the_method_and_target_their_line_gave() {
    let log = TempFile::new("refused");
    let (p, b) = logging_proxy(&log.0, "combined");
    let public = p.addr("public");
    let long_target = format!("/{}", "a".repeat(200));
    let many_fields: String = (0..12).map(|i| format!("X-F{i}: v\r\n")).collect();
    let cases: [(Vec<u8>, u16, &str); 5] = [
        // Refused while the target was still arriving: it is not logged.
        (format!("GET {long_target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(), 414, "\"GET - HTTP/1.1\" 414"),
        // The request line was complete before the head grew too large.
        (
            format!("GET /big?q=1 HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(3000)).into_bytes(),
            431,
            "\"GET /big?q=1 HTTP/1.1\" 431",
        ),
        // A complete head the parser refused: too many fields.
        (format!("GET /many HTTP/1.1\r\nHost: t\r\n{many_fields}\r\n").into_bytes(), 431, "\"GET /many HTTP/1.1\" 431"),
        (
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".to_vec(),
            413,
            "\"POST /upload HTTP/1.1\" 413",
        ),
        // Not a request line at all: nothing is certain.
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400, "\"- - HTTP/1.1\" 400"),
    ];
    let mut expected = Vec::new();
    for (bytes, status, logged) in &cases {
        let reply = exchange(public, bytes);
        assert_eq!(reply.statuses(), [*status], "{}", reply.text());
        expected.push(*logged);
    }
    let lines = wait_log_lines(&log.0, cases.len());
    let logged: Vec<&str> = lines.iter().map(|l| request_and_status(l)).collect();
    assert_eq!(logged, expected, "{lines:#?}");
    for line in &lines {
        assert!(line.ends_with(" - \"-\""), "refused before routing: no upstream, route `-`: {line}");
    }
    assert!(b.requests().is_empty(), "nothing refused reached the backend");
}

#[test]
fn a_408_logs_what_its_line_gave_and_the_time_it_waited() {
    let log = TempFile::new("timeout");
    let (p, _b) = logging_proxy(&log.0, "json");
    let public = p.addr("public");
    let sent = Instant::now();
    // Two slow clients at once: one stopped inside the headers, one inside
    // the target.
    let waits: Vec<_> = [&b"GET /slow?x=1 HTTP/1.0\r\nHost: t\r\n"[..], b"PUT /par"]
        .into_iter()
        .map(|bytes| {
            let mut c = Conn::connect(public);
            c.stream.write_all(bytes).expect("write");
            std::thread::spawn(move || read_reply(&mut c))
        })
        .collect();
    for w in waits {
        let reply = w.join().expect("client");
        assert_eq!(reply.statuses(), [408], "{}", reply.text());
        assert!(reply.closed);
    }
    assert!(sent.elapsed() >= Duration::from_millis(900), "answered before client_header passed");
    let lines = wait_log_lines(&log.0, 2);
    let mut v: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    v.sort_by_key(|v| v["method"].as_str().map(str::to_owned));
    assert_eq!(
        (&v[0]["method"], &v[0]["target"], &v[0]["protocol"]),
        (&"GET".into(), &"/slow?x=1".into(), &"HTTP/1.0".into())
    );
    assert_eq!((&v[1]["method"], &v[1]["target"]), (&"PUT".into(), &serde_json::Value::Null));
    for v in &v {
        assert_eq!(v["status"], 408);
        let ms = v["duration_ms"].as_f64().expect("duration_ms");
        assert!((900.0..3000.0).contains(&ms), "a 408 after a 1 s client_header waited {ms} ms: {v}");
    }
}
