use super::*;
use crate::config::HttpPolicy;

const LIMITS: Limits =
    Limits { max_header_bytes: 16384, max_headers: 100, max_target_bytes: 64, max_body_bytes: Some(1000) };

fn check(raw: &str) -> Result<(BodyKind, bool, Vec<u8>), RequestError> {
    let mut slots = [const { MaybeUninit::uninit() }; 128];
    let r = parse(raw.as_bytes(), &mut slots, &LIMITS, HttpPolicy::defaults())?;
    Ok((r.body, r.keep_alive, r.host.to_vec()))
}

fn upstream_head(raw: &str, path: &str) -> String {
    let mut slots = [const { MaybeUninit::uninit() }; 128];
    let r = parse(raw.as_bytes(), &mut slots, &LIMITS, HttpPolicy::defaults()).expect("valid request");
    let mut out = Vec::new();
    write_upstream_head(&r, path.as_bytes(), &Forwarded::plain(b"10.0.0.9"), HttpPolicy::defaults(), &mut out);
    String::from_utf8(out).expect("ascii")
}

#[test]
fn content_length_rules() {
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n").map(|r| r.0),
        Ok(BodyKind::Length(5))
    );
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").map(|r| r.0),
        Ok(BodyKind::Length(5))
    );
    for bad in ["+5", "-1", "0x5", "5x", "", "99999999999999999999", "5, 5"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
        assert!(matches!(check(&raw), Err(RequestError::BadRequest(_))), "{bad}");
    }
    let two = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    assert!(matches!(check(two), Err(RequestError::BadRequest(_))));
    let big = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n";
    assert_eq!(check(big), Err(RequestError::BodyTooLarge));
}

#[test]
fn transfer_encoding_rules() {
    let ok = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    assert_eq!(check(ok).map(|r| r.0), Ok(BodyKind::Chunked));
    let both = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    assert!(matches!(check(both), Err(RequestError::BadRequest(_))));
    for te in ["xchunked", "chunked, identity", "gzip", "gzip, chunked", "chunked, chunked"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert!(check(&raw).is_err(), "{te}");
    }
    let twice = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(check(twice).is_err());
    let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(matches!(check(http10), Err(RequestError::BadRequest(_))));
}

#[test]
fn host_rules() {
    assert!(matches!(check("GET / HTTP/1.1\r\n\r\n"), Err(RequestError::BadRequest(_))));
    assert!(matches!(check("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(RequestError::BadRequest(_))));
    for bad in ["a b", "a/b", "user@a", "a:", "a:123456", ""] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert!(matches!(check(&raw), Err(RequestError::BadRequest(_))), "{bad:?}");
    }
    for good in ["a", "a.example:8080", "[::1]:80", "10.0.0.1"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        assert_eq!(check(&raw).map(|r| r.2), Ok(good.as_bytes().to_vec()), "{good}");
    }
    assert_eq!(check("GET / HTTP/1.0\r\n\r\n").map(|r| r.2), Ok(Vec::new()));
}

#[test]
fn start_line_rules() {
    assert_eq!(check("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(RequestError::VersionNotSupported));
    assert_eq!(check("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), Err(RequestError::NotImplemented("CONNECT")));
    assert!(matches!(check("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"), Err(RequestError::BadRequest(_))));
    assert!(matches!(check("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), Err(RequestError::BadRequest(_))));
    assert!(check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    assert!(matches!(check("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), Err(RequestError::BadRequest(_))));
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(64));
    assert_eq!(check(&long), Err(RequestError::TargetTooLong));
    assert!(matches!(check("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), Err(RequestError::BadRequest(_))));
    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "X".repeat(33));
    assert_eq!(check(&long_method), Err(RequestError::NotImplemented("method too long")));
}

#[test]
fn header_section_rules() {
    for bad in ["X : y", " X: y", "X: a\r\n b", "X\x01: y", ": y", "X: a\x00b"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n");
        assert!(check(&raw).is_err(), "{bad:?}");
    }
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(check(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), Err(RequestError::TooManyHeaders));
    assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"), Err(RequestError::ExpectationFailed));
}

#[test]
fn keep_alive_by_version() {
    assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n").map(|r| r.1), Ok(true));
    assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").map(|r| r.1), Ok(false));
    assert_eq!(check("GET / HTTP/1.0\r\n\r\n").map(|r| r.1), Ok(false));
    assert_eq!(check("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").map(|r| r.1), Ok(true));
}

#[test]
fn absolute_form_routes_by_path_and_replaces_host() {
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let raw = b"GET http://Example.com:8080/admin?x=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let r = parse(raw, &mut slots, &LIMITS, HttpPolicy::defaults()).expect("valid");
    assert_eq!((r.path, r.query, r.host), (&b"/admin"[..], &b"?x=1"[..], &b"Example.com:8080"[..]));
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let r = parse(b"GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n", &mut slots, &LIMITS, HttpPolicy::defaults())
        .expect("valid");
    assert_eq!((r.path, r.query), (&b"/"[..], &b"?q"[..]));
}

#[test]
fn upstream_head_is_canonical() {
    let head = upstream_head(
        "POST /a?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-A: 2\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        "/b",
    );
    assert_eq!(
        head,
        "POST /b?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let head = upstream_head("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "/");
    assert_eq!(head, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n");
    let head = upstream_head("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n", "/");
    assert!(head.ends_with("Content-Length: 7\r\n\r\n"), "{head}");
}

#[test]
fn methods_are_case_sensitive() {
    assert_eq!(Method::from_token("get"), Method::Other);
    assert!(Method::from_token("GET").is_idempotent());
    assert!(!Method::from_token("POST").is_idempotent());
    assert!(!Method::from_token("PATCH").is_idempotent());
    assert!(Method::from_token("DELETE").is_idempotent());
}

fn with_policy(raw: &str, policy: &HttpPolicy) -> Result<String, RequestError> {
    let mut slots = [const { MaybeUninit::uninit() }; 32];
    let r = parse(raw.as_bytes(), &mut slots, &LIMITS, policy)?;
    let mut out = Vec::new();
    write_upstream_head(&r, r.path, &Forwarded::plain(b"10.0.0.9"), policy, &mut out);
    Ok(String::from_utf8(out).expect("ascii"))
}

#[test]
fn only_configured_upgrades_are_forwarded() {
    let d = HttpPolicy::defaults();
    let h2c = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n";
    assert_eq!(
        with_policy(h2c, d),
        Ok("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n".to_string())
    );
    // Without the Connection option, HTTP2-Settings is still never forwarded.
    let bare = with_policy("GET / HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: x\r\n\r\n", d).expect("valid");
    assert!(!bare.to_ascii_lowercase().contains("http2-settings"), "{bare}");
    let ws = with_policy("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket\r\nConnection: upgrade\r\n\r\n", d);
    assert!(ws.expect("valid").ends_with("Connection: upgrade\r\nUpgrade: WebSocket\r\n\r\n"));
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let r = parse(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", &mut slots, &LIMITS, d);
    assert_eq!(r.expect("valid").upgrade, None);
}

#[test]
fn underscored_names_follow_the_policy() {
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX-Ok: 1\r\n\r\n";
    let dropped = with_policy(raw, HttpPolicy::defaults()).expect("valid");
    assert!(!dropped.contains('_') && dropped.contains("X-Ok: 1"), "{dropped}");
    let pass = HttpPolicy { underscores: crate::config::Underscores::Pass, ..HttpPolicy::default() };
    assert!(with_policy(raw, &pass).expect("valid").contains("X_Forwarded_For: 6.6.6.6\r\n"));
    let reject = HttpPolicy { underscores: crate::config::Underscores::Reject, ..HttpPolicy::default() };
    assert_eq!(with_policy(raw, &reject), Err(RequestError::BadRequest("underscore in a header name")));
}

#[test]
fn request_line_shapes() {
    // A space inside the target is a malformed line, not a version.
    assert_eq!(
        check("GET /app1 x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Err(RequestError::BadRequest("malformed request line"))
    );
    assert!(matches!(check("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n"), Err(RequestError::BadRequest(_))));
    assert_eq!(check("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(RequestError::VersionNotSupported));
    assert_eq!(check("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), Err(RequestError::VersionNotSupported));
    for m in ["get", "Get", "G3T", "GE.T"] {
        let e = check(&format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(e, Err(RequestError::BadRequest("method is not an upper-case token")), "{m}");
    }
    assert!(check("M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    // Absolute-form does not excuse a missing Host in HTTP/1.1.
    assert_eq!(check("GET http://t/app1 HTTP/1.1\r\n\r\n"), Err(RequestError::BadRequest("missing Host")));
    assert!(check("GET http://t/app1 HTTP/1.0\r\n\r\n").is_ok());
}

#[test]
fn options_with_an_empty_path_asks_about_the_server() {
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let r = parse(b"OPTIONS http://t HTTP/1.1\r\nHost: t\r\n\r\n", &mut slots, &LIMITS, HttpPolicy::defaults());
    assert_eq!(r.expect("valid").path, b"*");
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let r = parse(b"GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", &mut slots, &LIMITS, HttpPolicy::defaults());
    assert_eq!(r.expect("valid").path, b"/");
}
