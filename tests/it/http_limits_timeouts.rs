//! Limits and deadlines (hazards C04, E01, E04-E06, F03 in docs/hazards.md):
//! head size and field count, body size, the total header deadline against
//! slowloris, keep-alive idle, 100-continue without deadlock, and a hung
//! backend.

use crate::support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn proxy_with(b: &RecordingBackend, timeouts: &[(&str, &str)], limits: &[(&str, &str)]) -> Proxy {
    proxy_custom(&runtime_config(2, timeouts, limits), b.addr(), r#"{ prefix = "/", upstream = "x" }"#)
}

fn head_with_fields(n: usize, value_len: usize) -> String {
    let mut s = String::from("GET /h HTTP/1.1\r\nHost: h\r\n");
    for i in 0..n {
        s.push_str(&format!("X-F{i}: {}\r\n", "v".repeat(value_len)));
    }
    s.push_str("\r\n");
    s
}

#[test]
fn head_larger_than_max_header_bytes_is_431() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[], &[("max_header_bytes", "1024")]);
    let small = head_with_fields(5, 100);
    assert!(small.len() < 1024);
    assert_eq!(request(proxy.addr("public"), small.as_bytes()).status, 200);

    for req in [head_with_fields(1, 1500), head_with_fields(20, 100)] {
        let r = exchange(proxy.addr("public"), req.as_bytes());
        r.assert_one_and_closed(&[431]);
    }
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn an_unfinished_oversized_head_is_431_at_once_not_at_the_deadline() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[("client_header", "10s")], &[("max_header_bytes", "1024")]);
    let mut c = Conn::connect(proxy.addr("public"));
    let start = Instant::now();
    // 3 writes of 600 bytes, never a blank line: counted across reads.
    c.write(b"GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..3 {
        if c.stream.write_all(format!("X-{i}: {}\r\n", "a".repeat(590)).as_bytes()).is_err() {
            break;
        }
    }
    let r = read_reply(&mut c);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    r.assert_one_and_closed(&[431]);
    assert!(b.requests().is_empty());
}

#[test]
fn more_than_max_headers_is_431() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[], &[("max_headers", "10")]);
    // Host + 9 = 10 fields: fine.
    assert_eq!(request(proxy.addr("public"), head_with_fields(9, 3).as_bytes()).status, 200);
    for n in [10, 50, 300] {
        let r = exchange(proxy.addr("public"), head_with_fields(n, 3).as_bytes());
        r.assert_one_and_closed(&[431]);
    }
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn content_length_above_max_body_bytes_is_413_before_any_forwarding() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())));
    let proxy = proxy_with(&b, &[], &[("max_body_bytes", "100")]);
    let body = "x".repeat(100);
    let req = format!("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n{body}");
    assert_eq!(request(proxy.addr("public"), req.as_bytes()).text(), "got 100");

    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    for cl in ["101", "18446744073709551615"] {
        let req = format!("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\n{smuggled}");
        let r = exchange(proxy.addr("public"), req.as_bytes());
        r.assert_one_and_closed(&[413]);
    }
    assert_eq!(b.requests().len(), 1, "{:?}", b.requests());
    assert_eq!(b.connections_accepted(), 1);
}

#[test]
fn chunked_body_above_max_body_bytes_is_413_or_closed() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", r.decoded_body.len())));
    let proxy = proxy_with(&b, &[], &[("max_body_bytes", "100")]);
    let mut req = b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("32\r\n{}\r\n", "y".repeat(50)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(proxy.addr("public"), &req);
    assert!(r.closed, "{:?}", r.text());
    let statuses = r.statuses();
    assert!(statuses.is_empty() || statuses == [413], "expected 413 or a bare close, got {:?}", r.text());
    assert!(b.wait_until(|_, closed| closed == b.connections_accepted()), "upstream connection left open");
    assert!(b.requests().iter().all(|r| !r.complete), "the backend got the whole oversized body: {:?}", b.requests());
}

#[test]
fn slowloris_gets_408_at_the_total_header_deadline_while_others_are_served() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[("client_header", "1s")], &[]);
    let mut slow = Conn::connect(proxy.addr("public"));
    let start = Instant::now();
    slow.write(b"G");
    let mut writer = slow.stream.try_clone().expect("clone");
    let dribbler = std::thread::spawn(move || {
        // One byte every 200 ms, never finishing the head; at most 5 s.
        for byte in b"ET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaa".iter() {
            std::thread::sleep(Duration::from_millis(200));
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    // Meanwhile a normal client is served.
    let r = get(proxy.addr("public"), "/normal");
    let normal_done = start.elapsed();
    assert_eq!((r.status, r.text()), (200, "b /normal\n".to_string()));

    let reply = read_reply(&mut slow);
    let took = start.elapsed();
    reply.assert_one_and_closed(&[408]);
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the deadline");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}: the deadline is not total");
    assert!(normal_done < took, "the normal client ({normal_done:?}) waited for the slow one ({took:?})");
    let _ = dribbler.join();
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/normal"]);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_client_idle() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[("client_idle", "1s")], &[]);
    let mut c = Client::connect(proxy.addr("public"));
    assert_eq!(c.get("/one").text(), "b /one\n");
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = c.conn.stream.read_to_end(&mut rest);
    let took = start.elapsed();
    assert!(n.is_ok(), "expected a clean close, got {n:?}");
    assert!(rest.is_empty(), "an idle close needs no answer, got {:?}", String::from_utf8_lossy(&rest));
    assert!(took >= Duration::from_millis(800) && took < Duration::from_millis(3000), "closed after {took:?}");
}

#[test]
fn a_connection_idle_before_its_first_request_is_closed_after_client_idle() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[("client_idle", "1s")], &[]);
    let mut c = Conn::connect(proxy.addr("public"));
    let start = Instant::now();
    let r = read_reply(&mut c);
    assert!(r.closed, "never closed");
    assert!(start.elapsed() < Duration::from_secs(3), "closed after {:?}", start.elapsed());
}

#[test]
fn expect_100_continue_gets_100_before_the_body_then_the_response() {
    let b = RecordingBackend::start(|r| ok(&format!("got {}", String::from_utf8_lossy(&r.decoded_body))));
    let proxy = proxy_to(&b);
    let mut c = Client::connect(proxy.addr("public"));
    c.send(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.conn.read_until(b"\r\n\r\n", 4096).expect("read 100").expect("closed before 100");
    let interim = String::from_utf8_lossy(&interim).to_string();
    assert!(interim.starts_with("HTTP/1.1 100 "), "expected 100 Continue first, got {interim:?}");
    c.send(b"hello");
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "got hello".to_string()));
    let seen = &b.requests()[0];
    assert!(seen.header("expect").is_none(), "{}", seen.raw_head);
    // Still in sync: a chunked upload with Expect too.
    c.send(b"POST /e2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.conn.read_until(b"\r\n\r\n", 4096).expect("read 100").expect("closed before 100");
    assert!(interim.starts_with(b"HTTP/1.1 100 "), "{:?}", String::from_utf8_lossy(&interim));
    c.send(b"2\r\nok\r\n0\r\n\r\n");
    assert_eq!(c.read_response(false).text(), "got ok");
}

#[test]
fn expect_100_continue_to_a_local_answer_gets_the_final_status_and_the_body_never_runs() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_custom(
        &runtime_config(2, &[], &[]),
        b.addr(),
        r#"{ prefix = "/admin", status = 403 }, { prefix = "/", upstream = "x" }"#,
    );
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut c = Client::connect(proxy.addr("public"));
    c.send(
        format!(
            "POST /admin HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 403, "{}", r.raw_head);
    // The client sends the body anyway (as old clients do after a timeout).
    let _ = c.conn.stream.write_all(smuggled.as_bytes());
    let closing = r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if closing {
        assert!(c.conn.closed_within(IO_TIMEOUT));
    } else {
        // Kept open: the body was drained, so the next request is this one.
        assert_eq!(c.get("/canary").text(), "b /canary\n");
    }
    assert!(b.requests().iter().all(|r| r.target() != "/smuggled"), "{:?}", b.requests());
}

/// A GET through a proxy with `upstream_response = 1s` to a backend that
/// writes `first` (maybe nothing) and then stalls until the proxy gives up
/// and closes. Returns the answer, how long it took, the backend and the
/// proxy (still running).
fn get_from_stalling_backend(first: &'static [u8]) -> (RawReply, Duration, RecordingBackend, Proxy) {
    let b = RecordingBackend::start(move |_| {
        Reply::Stream(Box::new(move |s| {
            s.write_all(first)?;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            Ok(())
        }))
    });
    let proxy = proxy_with(&b, &[("upstream_response", "1s")], &[]);
    let start = Instant::now();
    let r = exchange(proxy.addr("public"), b"GET /stall HTTP/1.1\r\nHost: h\r\n\r\n");
    (r, start.elapsed(), b, proxy)
}

#[test]
fn hung_backend_is_504_after_upstream_response() {
    let (r, took, b, _proxy) = get_from_stalling_backend(b"");
    r.assert_one_and_closed(&[504]);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "504 after {took:?}");
    b.wait_closed(1);
    assert_eq!(b.connections_accepted(), 1, "a timed-out request must not be retried");
}

/// Sends a head declaring `declared` body bytes and only 10 of them, then
/// waits for the answer; returns it and how long it took.
fn stall_mid_body(proxy: &Proxy, declared: usize) -> (RawReply, Duration) {
    let mut c = Conn::connect(proxy.addr("public"));
    let start = Instant::now();
    c.write(format!("PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: {declared}\r\n\r\n0123456789").as_bytes());
    let r = read_reply(&mut c);
    (r, start.elapsed())
}

#[test]
fn a_client_stalling_mid_body_gets_408_after_client_body() {
    let b = RecordingBackend::echo_id("b");
    let proxy = proxy_with(&b, &[("client_body", "1s")], &[]);
    // 100 bytes: a replayable body, read whole before the first attempt.
    // 1 MB: streamed to the backend as it arrives.
    for declared in [100, 1_000_000] {
        let (r, took) = stall_mid_body(&proxy, declared);
        r.assert_one_and_closed(&[408]);
        assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "408 after {took:?}");
    }
    assert!(b.wait_until(|_, closed| closed == b.connections_accepted()), "upstream connection left open");
}

#[test]
fn a_backend_stalling_mid_body_is_cut_after_upstream_response() {
    let (r, took, b, _proxy) = get_from_stalling_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    assert!(r.closed, "the proxy kept the client waiting on a stalled body");
    let text = String::from_utf8_lossy(&r.bytes).to_string();
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"), "{text:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "cut after {took:?}");
    b.wait_closed(1);
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_client_send() {
    let b = RecordingBackend::start(|_| {
        Reply::Stream(Box::new(|s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")?;
            // Far more than the sockets on the way can hold; the write
            // fails once the proxy gives up on its client and closes.
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..16 * 1024 {
                s.write_all(&block)?;
            }
            Ok(())
        }))
    });
    let proxy = proxy_with(&b, &[("client_send", "1s")], &[]);
    let mut c = Conn::connect(proxy.addr("public"));
    c.write(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    let start = Instant::now();
    assert!(c.read_until(b"\r\n\r\n", 64 * 1024).expect("head").is_some(), "no response head");
    // The client reads nothing more; the proxy must drop both sides.
    b.wait_closed(1);
    let took = start.elapsed();
    // Filling the sockets on the way takes a moment before the 1 s starts.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "dropped after {took:?}");
}

#[test]
fn a_backend_that_stops_reading_the_body_is_504_after_upstream_send_and_not_retried() {
    // Accepts, reads nothing, and holds each connection until the test ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    let backend = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let mut held = Vec::new();
        let deadline = Instant::now() + IO_TIMEOUT;
        while matches!(done_rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)) && Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    held.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let header = runtime_config(1, &[("upstream_send", "1s"), ("client_body", "20s")], &[]);
    let proxy = proxy_custom(&header, addr, r#"{ prefix = "/", upstream = "x" }"#);
    // 256 MiB declared: streamed (not replayable), far more than the
    // sockets on the way can hold.
    let total: usize = 256 << 20;
    let mut c = Conn::connect(proxy.addr("public"));
    c.write(format!("PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    let mut writer = c.stream.try_clone().expect("clone");
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..total / block.len() {
            if writer.write_all(&block).is_err() {
                return;
            }
        }
    });
    let r = read_reply(&mut c);
    let took = start.elapsed();
    r.assert_one_and_closed(&[504]);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "504 after {took:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "a send timeout must not be retried");
    drop(c);
    let _ = sender.join();
    let _ = done_tx.send(());
    let _ = backend.join();
}
