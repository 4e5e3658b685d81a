//! The multi-instance topology of issue 15, on loopback: a ringway in TCP
//! mode (sending PROXY v2, connect health checks every 100 ms) in front of
//! two ringway HTTP instances (reading PROXY from 127.0.0.1) in front of
//! the backends. One HTTP instance is killed under a steady load: the L4
//! tier retries refused connects on the other, so no request started after
//! the first detection interval fails, and the backends see the original
//! client's address throughout.

use crate::support::tcp::*;
use crate::support::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The address the client claims in its PROXY header to the L4 tier.
const CLIENT: &str = "192.0.2.10";

/// An HTTP instance: listener `public` reading PROXY headers from
/// 127.0.0.1, everything to `backend`.
fn http_instance(backend: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"{header}
[upstreams.app]
servers = ["{backend}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
proxy_protocol = true
trusted = ["127.0.0.1/32"]
routes = [ {{ prefix = "/", upstream = "app" }} ]
"#,
        header = runtime_config(2, &[], &[]),
    ))
}

/// The L4 tier: listener `edge` (PROXY from 127.0.0.1) relaying to
/// upstream `web` over `servers`, sending PROXY v2.
fn l4_tier(servers: [SocketAddr; 2]) -> Proxy {
    Proxy::start(&format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.web]
servers = ["{a}", "{b}"]
send_proxy_protocol = "v2"
health_check = {{ interval = "100ms" }}
max_fails = 1

[[listeners]]
name = "edge"
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "web"
proxy_protocol = true
trusted = ["127.0.0.1/32"]
"#,
        header = runtime_config(2, &[], &[]),
        a = servers[0],
        b = servers[1],
    ))
}

/// One request on a new connection through the L4 tier: the body of a
/// 200, or what went wrong.
fn try_request(edge: SocketAddr, i: usize) -> Result<String, String> {
    let s = TcpStream::connect_timeout(&edge, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    let mut c = Conn::new(s);
    let header = v1(CLIENT, "192.0.2.1", 40000 + (i % 20000) as u16, 80);
    let request = format!("GET /r{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    c.stream.write_all(&[header, request.into_bytes()].concat()).map_err(|e| format!("write: {e}"))?;
    let raw = c.read_to_close().map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).to_string();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_string()),
        _ => Err(format!("answer {text:?}")),
    }
}

#[test]
fn killing_an_http_instance_behind_the_l4_tier_fails_no_request_after_detection() {
    let (b1, b2) = (RecordingBackend::echo_id("h1"), RecordingBackend::echo_id("h2"));
    let mut h1 = http_instance(b1.addr());
    let h2 = http_instance(b2.addr());
    let (h1_addr, h2_addr) = (h1.addr("public"), h2.addr("public"));
    let t = l4_tier([h1_addr, h2_addr]);
    let edge = t.addr("edge");
    let health = |s: SocketAddr| format!("ringway_upstream_health{{upstream=\"web\",server=\"{s}\"}}");
    wait_series(&t, &health(h1_addr), 1.0);
    wait_series(&t, &health(h2_addr), 1.0);

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut tries = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let started = Instant::now();
                tries.push((started, try_request(edge, tries.len())));
            }
            tries
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    h1.signal(libc::SIGKILL);
    assert!(h1.wait_exit(Duration::from_secs(5)).is_some(), "h1 did not die");
    // Its port refuses connects from now on, and no other test takes it.
    let _hold = hold_port(h1_addr);
    wait_series(&t, &health(h1_addr), 0.0);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let tries = load.join().expect("load thread");

    let detected = killed_at + Duration::from_millis(100);
    let (early, late): (Vec<_>, Vec<_>) = tries.iter().partition(|(at, _)| *at < detected);
    // Each failure: when it started, in ms from the kill (negative: before).
    let failed = |v: &[&(Instant, Result<String, String>)]| -> Vec<String> {
        let at = |t: Instant| match t.checked_duration_since(killed_at) {
            Some(d) => d.as_secs_f64() * 1e3,
            None => -(killed_at - t).as_secs_f64() * 1e3,
        };
        v.iter().filter_map(|(t, r)| r.as_ref().err().map(|e| format!("{:+.1} ms: {e}", at(*t)))).collect()
    };
    let (early_failed, late_failed) = (failed(&early), failed(&late));
    eprintln!(
        "{} requests: {} started before kill + 100 ms, {} failed {early_failed:?}; {} after",
        tries.len(),
        early.len(),
        early_failed.len(),
        late.len()
    );
    assert!(late_failed.is_empty(), "requests failed after detection: {late_failed:?}");
    assert!(late.len() >= 20, "too few requests after the kill for a steady load: {}", late.len());
    let by = |v: &[&(Instant, Result<String, String>)], id: &str| {
        v.iter().filter(|(_, r)| r.as_ref().is_ok_and(|b| b.starts_with(&format!("{id} ")))).count()
    };
    assert!(by(&early, "h1") > 0 && by(&early, "h2") > 0, "both instances served before the kill");
    assert_eq!(by(&late, "h2"), late.len(), "h2 served everything after the kill");

    for rec in b1.requests().iter().chain(b2.requests().iter()) {
        assert_eq!(rec.headers_named("x-real-ip"), [CLIENT], "{}", rec.raw_head);
        assert_eq!(rec.headers_named("x-forwarded-for"), [CLIENT], "{}", rec.raw_head);
    }
}
