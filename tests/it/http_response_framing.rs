//! Response framing from the backend (hazards C07, C08, F04, F07 in
//! docs/hazards.md): invalid framing is a 502 and the upstream connection is
//! discarded; 1xx are relayed; bodyless responses stay bodyless even when the
//! backend sends stray bytes; a backend dying mid-body gives a detectably
//! truncated message; bytes on an idle pooled connection get it discarded.
//!
//! The proxy runs one worker, so every client connection shares one
//! upstream pool and a connection that was not discarded would be reused.

use crate::support::*;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

fn raw(s: &str) -> Reply {
    Reply::Bytes(s.as_bytes().to_vec())
}

/// Backend: `/ok` answers `fine`; the other paths misbehave as named.
fn misbehaving(r: &Recorded) -> Reply {
    match r.target() {
        "/dup-cl" => raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        "/bad-cl" => raw("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
        "/cl-te" => {
            raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        }
        "/te-cl" => {
            raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        }
        "/short-status" => raw("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
        "/status-000" => raw("HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n"),
        "/status-999" => raw("HTTP/1.1 999 Nine\r\nContent-Length: 0\r\n\r\n"),
        "/ssh" => raw("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        "/binary" => Reply::Bytes(vec![
            0x16, 0x03, 0x01, 0x00, 0x2a, 0x02, 0x00, 0x00, 0x26, 0x03, 0x03, b'\r', b'\n', b'\r', b'\n',
        ]),
        "/obs-fold" => raw("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        "/space-colon" => raw("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
        "/nul" => raw("HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n"),
        "/bad-chunk" => raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"),
        _ => ok("fine"),
    }
}

/// A GET on a fresh client connection; returns the conn id it used upstream.
fn ok_on_new_connection(proxy: &Proxy, b: &RecordingBackend) -> usize {
    let r = get(proxy.addr("public"), "/ok");
    assert_eq!((r.status, r.text()), (200, "fine".to_string()), "{}", r.raw_head);
    b.requests().last().expect("recorded").conn_id
}

#[test]
fn invalid_response_framing_is_502_and_the_upstream_connection_is_discarded() {
    let b = RecordingBackend::start(misbehaving);
    let proxy = proxy_one_worker(&b);
    // Control: a clean exchange leaves the connection pooled and reused.
    let first = ok_on_new_connection(&proxy, &b);
    let mut pooled = ok_on_new_connection(&proxy, &b);
    assert_eq!(first, pooled, "a clean upstream connection should be reused (test premise)");
    for path in [
        "/dup-cl",
        "/bad-cl",
        "/cl-te",
        "/te-cl",
        "/short-status",
        "/status-000",
        "/status-999",
        "/ssh",
        "/binary",
        "/obs-fold",
        "/space-colon",
        "/nul",
    ] {
        let r = exchange(proxy.addr("public"), format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        r.assert_one_and_closed(&[502]);
        let text = r.text();
        for leak in ["hello", "SSH", "Zero", "Nine"] {
            assert!(!text.contains(leak), "{path}: upstream bytes relayed: {text:?}");
        }
        let bad = b.requests().last().expect("recorded").clone();
        assert_eq!(bad.target(), path);
        assert_eq!(bad.conn_id, pooled, "{path}: expected to go out on the pooled connection");
        let next = ok_on_new_connection(&proxy, &b);
        assert_ne!(next, bad.conn_id, "{path}: the upstream connection with the bad response was reused");
        pooled = next;
    }
}

#[test]
fn malformed_chunked_response_body_is_truncated_and_closed() {
    let b = RecordingBackend::start(misbehaving);
    let proxy = proxy_one_worker(&b);
    let r = exchange(proxy.addr("public"), b"GET /bad-chunk HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.closed);
    // Either a 502 (head not sent yet) or a head and an unterminated body.
    let text = r.text();
    if r.statuses() != [502] {
        let head_end = text.find("\r\n\r\n").expect("a head") + 4;
        assert!(chunked_body_len(&r.bytes[head_end..]).is_none(), "complete-looking body: {text:?}");
    }
    assert!(!text.contains("hello"), "{text:?}");
    let next = ok_on_new_connection(&proxy, &b);
    assert_ne!(next, b.requests()[0].conn_id);
}

#[test]
fn informational_responses_are_relayed_in_order() {
    let b = RecordingBackend::start(|r| match r.target() {
        "/early" => raw("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
             HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => ok("fine"),
    });
    let proxy = proxy_one_worker(&b);
    let mut c = Client::connect(proxy.addr("public"));
    c.send(b"GET /early HTTP/1.1\r\nHost: h\r\n\r\n");
    let h1 = c.conn.read_until(b"\r\n\r\n", 4096).expect("read").expect("103");
    let h1 = String::from_utf8_lossy(&h1).to_string();
    assert!(h1.starts_with("HTTP/1.1 103 "), "{h1:?}");
    assert!(h1.contains("Link: </s.css>; rel=preload\r\n"), "{h1:?}");
    assert!(!h1.to_ascii_lowercase().contains("content-length"), "{h1:?}");
    let h2 = c.conn.read_until(b"\r\n\r\n", 4096).expect("read").expect("100");
    assert!(h2.starts_with(b"HTTP/1.1 100 "), "{:?}", String::from_utf8_lossy(&h2));
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));
    // Still in sync.
    assert_eq!(c.get("/ok").text(), "fine");
}

#[test]
fn http10_client_gets_no_informational_responses() {
    let b = RecordingBackend::start(|_| {
        raw("HTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    });
    let proxy = proxy_one_worker(&b);
    let r = exchange(proxy.addr("public"), b"GET /early HTTP/1.0\r\n\r\n");
    assert_eq!(r.statuses(), [200], "{:?}", r.text());
}

/// Sends `first` (a bodyless exchange whose backend answer carries stray
/// bytes), then `/ok` on the same client connection: it must get its own
/// answer over a different upstream connection.
fn stray_bytes_after_bodyless_response(first: &[u8], status: u16) {
    let b = RecordingBackend::start(|r| match r.target() {
        "/head" => raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
        "/204" => {
            raw("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        }
        "/304" => {
            raw("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
        }
        _ => ok("fine"),
    });
    let proxy = proxy_one_worker(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let r = c.request(first);
    assert_eq!(r.status, status, "{}", r.raw_head);
    assert!(r.body.is_empty());
    let r = c.get("/ok");
    assert_eq!((r.status, r.text()), (200, "fine".to_string()), "stray bytes were delivered as the next response");
    let seen = b.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0].conn_id, seen[1].conn_id, "the upstream connection with stray bytes was reused");
    // And the client connection is clean: nothing else arrives.
    let open = !c.conn.closed_within(std::time::Duration::from_millis(200));
    assert!(open, "the client connection was closed");
    assert!(c.conn.take_buffered().is_empty(), "extra bytes on the client connection");
}

#[test]
fn head_response_with_stray_body_bytes() {
    stray_bytes_after_bodyless_response(b"HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n", 200);
}

#[test]
fn no_content_response_followed_by_a_second_response() {
    stray_bytes_after_bodyless_response(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n", 204);
}

#[test]
fn not_modified_response_followed_by_a_second_response() {
    stray_bytes_after_bodyless_response(b"GET /304 HTTP/1.1\r\nHost: h\r\n\r\n", 304);
}

#[test]
fn backend_dying_mid_content_length_body_gives_a_short_body_and_a_close() {
    let b = RecordingBackend::start(|_| {
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"0123456789");
        Reply::Close(bytes)
    });
    let proxy = proxy_one_worker(&b);
    let mut c = Conn::connect(proxy.addr("public"));
    c.write(b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = c.read_until(b"\r\n\r\n", 4096).expect("read").expect("head");
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    assert_eq!(
        parse_fields(&head).iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|f| f.1.as_str()),
        Some("100")
    );
    let rest = read_reply(&mut c);
    assert!(rest.closed, "the truncated response must end with a close");
    assert_eq!(rest.bytes, b"0123456789", "never padded, never completed");
}

#[test]
fn backend_dying_mid_chunked_body_gives_no_last_chunk_and_a_close() {
    let b = RecordingBackend::start(|_| {
        Reply::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nwor".to_vec())
    });
    let proxy = proxy_one_worker(&b);
    let mut c = Conn::connect(proxy.addr("public"));
    c.write(b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = c.read_until(b"\r\n\r\n", 4096).expect("read").expect("head");
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&head));
    let rest = read_reply(&mut c);
    assert!(rest.closed, "the truncated response must end with a close");
    assert!(chunked_body_len(&rest.bytes).is_none(), "a complete chunked body: {:?}", rest.text());
    assert!(!rest.text().contains("0\r\n\r\n"), "a last chunk was sent: {:?}", rest.text());
    assert!(rest.text().contains("hello"), "{:?}", rest.text());
}

#[test]
fn backend_closing_before_any_response_byte_is_502_and_a_post_is_not_replayed() {
    let b = RecordingBackend::start(|_| Reply::Close(Vec::new()));
    let proxy = proxy_one_worker(&b);
    let r = exchange(proxy.addr("public"), b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
    r.assert_one_and_closed(&[502]);
    assert_eq!(b.requests().len(), 1, "a POST must never be replayed");
}

#[test]
fn bytes_on_an_idle_pooled_connection_get_it_discarded() {
    type Ctl = (mpsc::Receiver<()>, mpsc::Sender<()>);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let ctl: Arc<Mutex<Option<Ctl>>> = Arc::new(Mutex::new(Some((go_rx, done_tx))));
    let b = RecordingBackend::start(move |r| {
        if r.target() != "/then-stray" {
            return ok("fine");
        }
        let ctl = ctl.lock().expect("lock").take();
        Reply::StreamKeep(Box::new(move |s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")?;
            let mut late = s.try_clone()?;
            if let Some((go, done)) = ctl {
                std::thread::spawn(move || {
                    if go.recv_timeout(IO_TIMEOUT).is_ok() {
                        let _ = late.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray");
                        let _ = done.send(());
                    }
                });
            }
            Ok(())
        }))
    });
    let proxy = proxy_one_worker(&b);
    let r = get(proxy.addr("public"), "/then-stray");
    assert_eq!(r.text(), "first");
    go_tx.send(()).expect("go");
    done_rx.recv_timeout(IO_TIMEOUT).expect("stray bytes written");
    let r = get(proxy.addr("public"), "/ok");
    assert_eq!((r.status, r.text()), (200, "fine".to_string()), "the unsolicited bytes became the response");
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].conn_id, seen[1].conn_id, "the connection with unsolicited bytes was reused");
}
