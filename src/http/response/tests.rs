use super::*;
use std::mem::MaybeUninit;

fn parsed(raw: &str, head: bool) -> Result<(u16, BodyKind, bool), BadResponse> {
    let mut slots = [const { MaybeUninit::uninit() }; 32];
    parse(raw.as_bytes(), &mut slots, head).map(|r| (r.status, r.body, r.upstream_close))
}

fn client_head(raw: &str, http10: bool, keep_alive: bool) -> String {
    let mut slots = [const { MaybeUninit::uninit() }; 32];
    let r = parse(raw.as_bytes(), &mut slots, false).expect("valid");
    let mut out = Vec::new();
    write_client_head(&r, client_framing(r.body, http10), http10, keep_alive, &mut out);
    String::from_utf8(out).expect("ascii")
}

#[test]
fn framing_rules() {
    assert_eq!(parsed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Ok((200, BodyKind::Length(5), false)));
    assert_eq!(parsed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok((200, BodyKind::None, false)));
    assert_eq!(parsed("HTTP/1.1 204 No Content\r\n\r\n", false), Ok((204, BodyKind::None, false)));
    assert_eq!(
        parsed("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false).map(|r| r.1),
        Ok(BodyKind::None)
    );
    assert_eq!(parsed("HTTP/1.1 200 OK\r\n\r\n", false), Ok((200, BodyKind::UntilClose, true)));
    assert_eq!(
        parsed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false).map(|r| r.1),
        Ok(BodyKind::Chunked)
    );
    assert_eq!(parsed("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).map(|r| r.2), Ok(true));
    assert_eq!(
        parsed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false).map(|r| r.2),
        Ok(true)
    );
}

#[test]
fn bad_responses_are_refused() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 000 Zero\r\n\r\n",
        "HTTP/1.1 600 Big\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(parsed(raw, false).is_err(), "{raw:?}");
    }
}

#[test]
fn client_head_drops_hop_by_hop_and_reframes() {
    let raw = "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        client_head(raw, false, true),
        "HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        client_head(raw, true, false),
        "HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nConnection: close\r\n\r\n"
    );
    let until_close = "HTTP/1.1 200 OK\r\nX: 1\r\n\r\n";
    assert_eq!(client_head(until_close, false, true), "HTTP/1.1 200 OK\r\nX: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let cl = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(client_head(cl, true, true), "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n");
}

#[test]
fn head_and_304_keep_their_length_field() {
    let mut slots = [const { MaybeUninit::uninit() }; 8];
    let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", &mut slots, true).expect("valid");
    let mut out = Vec::new();
    write_client_head(&r, ClientFraming::None, false, true, &mut out);
    assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n");
}
