use super::*;

fn entry() -> Entry<'static> {
    Entry {
        client: "10.0.0.7:5555".parse().expect("addr"),
        method: b"GET",
        target: b"/app1?q=\"x\"",
        http10: false,
        status: 200,
        bytes: 27,
        duration: Duration::from_micros(1500),
        upstream: Some("127.0.0.1:2222".parse().expect("addr")),
        route: "/app1",
        referer: b"",
        user_agent: b"curl/8.0",
        tls: None,
    }
}

#[test]
fn tls_fields_follow_on_tls_listeners() {
    let mut e = entry();
    e.tls = Some(TlsFields { version: "TLSv1.3", cipher: "TLS13_AES_128_GCM_SHA256", sni: "a.example.test" });
    let mut out = Vec::new();
    format(&mut out, LogFormat::Combined, &e, UNIX_EPOCH);
    let line = String::from_utf8(out).expect("ascii");
    assert!(line.ends_with("\"/app1\" TLSv1.3 TLS13_AES_128_GCM_SHA256 \"a.example.test\"\n"), "{line}");
    let mut out = Vec::new();
    e.tls = Some(TlsFields { sni: "", ..e.tls.expect("set") });
    format(&mut out, LogFormat::Json, &e, UNIX_EPOCH);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!((&v["tls_version"], &v["tls_sni"]), (&serde_json::json!("TLSv1.3"), &serde_json::Value::Null));
}

#[test]
fn civil_dates() {
    assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(civil(1_795_624_945), (2026, 11, 25, 16, 42, 25));
    assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
}

#[test]
fn combined_line() {
    let mut out = Vec::new();
    format(&mut out, LogFormat::Combined, &entry(), UNIX_EPOCH + Duration::from_secs(1_795_624_945));
    assert_eq!(
        String::from_utf8(out).expect("ascii"),
        "10.0.0.7 - - [25/Nov/2026:16:42:25 +0000] \"GET /app1?q=\\x22x\\x22 HTTP/1.1\" 200 27 \"-\" \"curl/8.0\" 1.500 127.0.0.1:2222 \"/app1\"\n"
    );
}

#[test]
fn json_line_is_valid_json() {
    let mut out = Vec::new();
    let mut e = entry();
    e.user_agent = b"a\xffb\\";
    format(&mut out, LogFormat::Json, &e, UNIX_EPOCH + Duration::from_secs(1_795_624_945));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["status"], 200);
    assert_eq!(v["target"], "/app1?q=\"x\"");
    assert_eq!(v["upstream"], "127.0.0.1:2222");
    assert_eq!(v["time"], "2026-11-25T16:42:25Z");
    assert_eq!(v["user_agent"], "a\u{ff}b\\");
}

#[test]
fn an_unknown_method_or_target_is_a_dash_or_null() {
    let mut e = entry();
    (e.method, e.target, e.status) = (b"", b"", 408);
    let mut out = Vec::new();
    format(&mut out, LogFormat::Combined, &e, UNIX_EPOCH);
    let line = String::from_utf8(out).expect("ascii");
    assert!(line.contains("] \"- - HTTP/1.1\" 408 "), "{line}");
    let mut out = Vec::new();
    e.method = b"GET";
    format(&mut out, LogFormat::Json, &e, UNIX_EPOCH);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!((&v["method"], &v["target"]), (&serde_json::json!("GET"), &serde_json::Value::Null));
}
