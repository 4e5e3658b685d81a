//! A graceful stop (issue 12): at SIGTERM every idle keep-alive connection
//! on every worker closes at once, requests in flight finish with
//! `Connection: close`, listeners stop accepting, and a connection accepted
//! just before the stop still gets its first request answered.

use crate::support::ops::{admin_get, refused_within};
use crate::support::*;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to poll for something the proxy does on its 20 ms tick.
const SETTLE: Duration = Duration::from_secs(2);
/// How soon after SIGTERM an idle connection must see EOF: a few ticks.
const IDLE_CLOSE_BOUND: Duration = Duration::from_millis(500);
const STOPPING: &str = "stopping: no new connections";

/// A backend whose `/slow` answer waits until the returned sender is
/// dropped (or 10 s pass); everything else gets `fast` at once.
fn slow_backend() -> (RecordingBackend, mpsc::Sender<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let b = RecordingBackend::start(move |r| {
        if r.target() != "/slow" {
            return ok("fast");
        }
        let release_rx = Arc::clone(&release_rx);
        Reply::StreamKeep(Box::new(move |s| {
            let _ = release_rx.lock().expect("lock").recv_timeout(Duration::from_secs(10));
            std::io::Write::write_all(s, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
        }))
    });
    (b, release_tx)
}

/// `threads` workers, info logging (stderr shows the stop), an admin
/// listener, and everything routed to `server`.
fn stop_config(threads: usize, server: SocketAddr) -> String {
    format!(
        r#"
[runtime]
threads = {threads}
log_level = "info"

[timeouts]
client_idle = "20s"
upstream_response = "15s"

[admin]
bind = "127.0.0.1:0"

[upstreams.a]
servers = ["{server}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "a" }} ]
"#
    )
}

/// The open client connections the proxy counts (admin `/metrics`).
fn open_connections(p: &Proxy) -> f64 {
    let r = get(p.admin_addr(), "/metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("ringway_connections{listener=\"public\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the proxy counts `n` open client connections.
fn wait_open_connections(p: &Proxy, n: f64) {
    let deadline = Instant::now() + SETTLE;
    while open_connections(p) != n {
        assert!(Instant::now() < deadline, "the proxy never counted {n} open connections");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn close_header(r: &Response) -> bool {
    r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Idle keep-alive connections, one slow request in flight on a keep-alive
/// connection, and one connection accepted but not yet used; then SIGTERM.
fn idle_connections_close_at_once_while_a_request_finishes(threads: usize) {
    let (b, release) = slow_backend();
    let mut p = Proxy::start(&stop_config(threads, b.addr()));
    let public = p.addr("public");
    // Several, so that with two workers some share the slow request's
    // worker (the kernel spreads connections by a hash of their ports).
    let mut idle: Vec<Client> = (0..6).map(|_| Client::connect(public)).collect();
    for c in &mut idle {
        assert_eq!(c.get("/fast").text(), "fast");
    }
    let mut slow = Client::connect(public);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n");
    b.wait_requests(7);
    let mut unused = Client::connect(public);
    wait_open_connections(&p, 8.0);

    assert_eq!(admin_get(&p, "/health").status, 200);
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);
    for (i, c) in idle.iter_mut().enumerate() {
        let left = (signalled + IDLE_CLOSE_BOUND).saturating_duration_since(Instant::now());
        assert!(
            c.conn.closed_within(left.max(Duration::from_millis(1))),
            "idle connection {i} still open {:?} after SIGTERM, with a request in flight",
            signalled.elapsed()
        );
    }
    assert!(refused_within(public, SETTLE), "the listener still accepts during the drain");
    assert!(p.wait_stderr(STOPPING, SETTLE), "{}", p.stderr());
    assert!(p.try_exit().is_none(), "the proxy exited with a request in flight");
    // The tier in front learns of the stop from the health endpoint.
    let health = admin_get(&p, "/health");
    assert_eq!((health.status, health.text().as_str()), (503, "stopping\n"));

    // Accepted before the stop, asking only now: it is answered, and told
    // the connection closes.
    let r = unused.get("/fast");
    assert_eq!((r.status, close_header(&r)), (200, true), "{}", r.raw_head);
    assert!(unused.conn.closed_within(SETTLE));

    drop(release);
    let r = slow.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    assert!(close_header(&r), "the last response during a stop must say Connection: close: {}", r.raw_head);
    assert!(slow.conn.closed_within(SETTLE), "the connection stayed open after its last response");
    let status = p.wait_exit(Duration::from_secs(5)).expect("the proxy did not exit after the last response");
    assert!(status.success(), "{status:?}");
    assert_eq!(b.requests().len(), 8, "only the requests above reached the backend");
}

#[test]
fn sigterm_closes_idle_connections_at_once_with_one_worker() {
    idle_connections_close_at_once_while_a_request_finishes(1);
}

#[test]
fn sigterm_closes_idle_connections_at_once_on_every_worker() {
    idle_connections_close_at_once_while_a_request_finishes(2);
}
