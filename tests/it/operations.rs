//! Operations (issue 5): reload on SIGHUP and `POST /reload`, graceful and
//! immediate stop, the admin API (metrics, status, health, drain/enable) and
//! the access log, each checked against a real `ringway` process.

use crate::support::ops::*;
use crate::support::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RELOAD_OK: &str = "ringway_config_reloads_total{result=\"success\"}";
const RELOAD_FAILED: &str = "ringway_config_reloads_total{result=\"failure\"}";
const DURATION_COUNT: &str = "ringway_request_duration_seconds_count";

/// `[runtime]` (two workers, info logging so stderr shows what the control
/// thread did, plus `runtime_extra`), `[timeouts]` and an `[admin]` listener
/// on an ephemeral port.
fn header(runtime_extra: &str) -> String {
    format!(
        r#"
[runtime]
threads = 2
log_level = "info"
{runtime_extra}

[timeouts]
client_header = "10s"
client_idle = "20s"
upstream_connect = "2s"
upstream_response = "15s"

[admin]
bind = "127.0.0.1:0"
"#
    )
}

/// A config with upstream `a` = `server` and one listener `public` whose
/// routes are `routes` (TOML inline tables); `more` is appended verbatim.
fn config(server: SocketAddr, routes: &str, more: &str) -> String {
    format!(
        r#"{}
[upstreams.a]
servers = ["{server}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {routes} ]
{more}"#,
        header("")
    )
}

// ---------------------------------------------------------------------------
// Admin API helpers.
// ---------------------------------------------------------------------------

/// One scrape of `/metrics`: series (`name{labels}`) to value.
struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// Sum of every series whose text starts with `prefix`.
    fn sum(&self, prefix: &str) -> f64 {
        self.0.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }
}

fn scrape(p: &Proxy) -> Metrics {
    let r = admin_get(p, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut m = HashMap::new();
    for line in r.text().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad metrics value in {line:?}"));
        assert!(m.insert(series.to_string(), value).is_none(), "series {series} appears twice");
    }
    Metrics(m)
}

/// Polls until `series` reaches `expected` (workers report on a 20 ms tick,
/// so a scrape right after a response may miss it), then asserts it is
/// exactly `expected`. Returns the last scrape.
fn wait_metric(p: &Proxy, series: &str, expected: f64) -> Metrics {
    let deadline = Instant::now() + SETTLE;
    loop {
        let m = scrape(p);
        let v = m.get(series);
        if v >= expected || Instant::now() >= deadline {
            assert_eq!(v, expected, "{series}");
            return m;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_json(p: &Proxy) -> serde_json::Value {
    let r = admin_get(p, "/status");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("/status is JSON")
}

/// `drained` of `server` in upstream `upstream` according to `/status`.
fn drained(p: &Proxy, upstream: &str, server: SocketAddr) -> bool {
    let doc = status_json(p);
    let up = doc["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == upstream)
        .unwrap_or_else(|| panic!("no upstream {upstream} in {doc}"));
    let s = up["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["addr"] == server.to_string())
        .unwrap_or_else(|| panic!("no server {server} in {doc}"));
    assert!(s["in_flight"].is_u64() && s["idle_connections"].is_u64(), "{s}");
    s["drained"].as_bool().expect("drained is a bool")
}

// ---------------------------------------------------------------------------
// Other helpers.
// ---------------------------------------------------------------------------

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in config")) + 1
}

/// A backend whose answer to `/slow` waits `delay` (or until the returned
/// sender is dropped) and then sends a 64 KiB body; `/fast` and everything
/// else get `fast` at once.
fn slow_backend(delay: Duration) -> (RecordingBackend, mpsc::Sender<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let b = RecordingBackend::start(move |r| {
        if r.target() != "/slow" {
            return ok("fast");
        }
        let release_rx = Arc::clone(&release_rx);
        Reply::StreamKeep(Box::new(move |s| {
            let _ = release_rx.lock().expect("lock").recv_timeout(delay);
            let body = pattern();
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())?;
            s.write_all(&body)
        }))
    });
    (b, release_tx)
}

// ---------------------------------------------------------------------------
// 1. Reload: new routes reach open keep-alive connections.
// ---------------------------------------------------------------------------

fn two_route_configs(a: SocketAddr, b: SocketAddr) -> (String, String) {
    let v1 = config(a, r#"{ prefix = "/", upstream = "a" }"#, "");
    let v2 = config(
        a,
        r#"{ prefix = "/", upstream = "a" }, { prefix = "/new", upstream = "b" }"#,
        &format!("\n[upstreams.b]\nservers = [\"{b}\"]\n"),
    );
    (v1, v2)
}

#[test]
fn sighup_adds_a_route_seen_by_an_open_keepalive_connection() {
    let a = RecordingBackend::echo_id("a");
    let b = RecordingBackend::echo_id("b");
    let (v1, v2) = two_route_configs(a.addr(), b.addr());
    let mut p = Proxy::start(&v1);
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/new/x").text(), "a /new/x\n", "before the reload /new goes to `/`");
    assert_eq!(c.get("/y").text(), "a /y\n");

    p.rewrite_config(&v2);
    p.signal(libc::SIGHUP);
    wait_metric(&p, RELOAD_OK, 1.0);

    // The same connection, opened and used before the reload.
    let r = c.get("/new/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "b /new/x\n", "the open connection must see the new route");
    assert!(!r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")), "{}", r.raw_head);
    assert_eq!(c.get("/y").text(), "a /y\n", "the old route still works");
    assert_eq!(get(p.addr("public"), "/new/z").text(), "b /new/z\n", "and new connections see it too");
    assert_eq!(b.requests().len(), 2);
    assert_eq!(scrape(&p).get(RELOAD_FAILED), 0.0);
    assert!(p.try_exit().is_none(), "the proxy must keep running");
}

#[test]
fn post_reload_adds_a_route_seen_by_an_open_keepalive_connection() {
    let a = RecordingBackend::echo_id("a");
    let b = RecordingBackend::echo_id("b");
    let (v1, v2) = two_route_configs(a.addr(), b.addr());
    let p = Proxy::start(&v1);
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/new/x").text(), "a /new/x\n");

    p.rewrite_config(&v2);
    let r = admin_post(&p, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("/reload answers JSON");
    assert_eq!(doc["reloaded"], true, "{doc}");
    assert_eq!(doc["restart_required"], serde_json::json!([]), "{doc}");
    // The admin reload is synchronous: the very next request sees it.
    assert_eq!(c.get("/new/x").text(), "b /new/x\n");

    // And back: the route disappears again on the same connection.
    p.rewrite_config(&v1);
    assert_eq!(admin_post(&p, "/reload").status, 200);
    assert_eq!(c.get("/new/x").text(), "a /new/x\n");
    let m = scrape(&p);
    assert_eq!((m.get(RELOAD_OK), m.get(RELOAD_FAILED)), (2.0, 0.0));
}

// ---------------------------------------------------------------------------
// 2. A bad config on reload is refused; the old one keeps serving.
// ---------------------------------------------------------------------------

#[test]
fn invalid_config_on_sighup_keeps_the_old_config_serving() {
    let a = RecordingBackend::echo_id("a");
    let b = RecordingBackend::echo_id("b");
    let v1 = config(a.addr(), r#"{ prefix = "/", upstream = "a" }"#, "");
    let mut p = Proxy::start(&v1);
    let path = p.config_path().display().to_string();
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/x").text(), "a /x\n");

    // A TOML syntax error.
    let bad = format!("{v1}\n[upstreams.b]\nservers = [\"{}\"]\nthis is = [ not toml\n", b.addr());
    let line = line_of(&bad, "this is");
    p.rewrite_config(&bad);
    p.signal(libc::SIGHUP);
    let m = wait_metric(&p, RELOAD_FAILED, 1.0);
    assert_eq!(m.get(RELOAD_OK), 0.0);
    let needle = format!("reload refused, the running config stays: {path}:{line}:");
    assert!(p.wait_stderr(&needle, SETTLE), "stderr lacks {needle:?}:\n{}", p.stderr());
    assert!(p.try_exit().is_none(), "the proxy must stay up");
    assert_eq!(c.get("/x").text(), "a /x\n", "the open connection still works on the old config");
    assert_eq!(get(p.addr("public"), "/x").text(), "a /x\n", "new connections too");

    // A config that parses but names an unknown upstream.
    let bad = config(
        a.addr(),
        r#"{ prefix = "/", upstream = "a" },
  { prefix = "/new", upstream = "nope" }"#,
        "",
    );
    let line = line_of(&bad, "\"nope\"");
    p.rewrite_config(&bad);
    p.signal(libc::SIGHUP);
    let m = wait_metric(&p, RELOAD_FAILED, 2.0);
    assert_eq!(m.get(RELOAD_OK), 0.0);
    let needle = format!("reload refused, the running config stays: {path}:{line}:");
    assert!(p.wait_stderr(&needle, SETTLE), "stderr lacks {needle:?}:\n{}", p.stderr());
    assert!(p.stderr().contains("unknown upstream `nope`"), "{}", p.stderr());
    assert!(p.try_exit().is_none(), "the proxy must stay up");
    assert_eq!(c.get("/new/x").text(), "a /new/x\n", "the refused route must not apply");

    // The admin API refuses it the same way, with the location in the body.
    let r = admin_post(&p, "/reload");
    assert_eq!(r.status, 400);
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("/reload answers JSON");
    assert_eq!(doc["reloaded"], false, "{doc}");
    let error = doc["error"].as_str().expect("error text");
    assert!(error.starts_with(&format!("{path}:{line}:")), "{error}");
    wait_metric(&p, RELOAD_FAILED, 3.0);

    // A good config still reloads afterwards.
    p.rewrite_config(&config(a.addr(), r#"{ prefix = "/", status = 403 }"#, ""));
    p.signal(libc::SIGHUP);
    wait_metric(&p, RELOAD_OK, 1.0);
    assert_eq!(c.get("/x").status, 403);
}

// ---------------------------------------------------------------------------
// 3 and 4. Stop.
// ---------------------------------------------------------------------------

/// The log line the control thread writes when a stop signal was handled.
const STOPPING: &str = "stopping: no new connections";

#[test]
fn sigterm_lets_an_inflight_request_finish_then_exits_zero() {
    let (b, _release) = slow_backend(Duration::from_millis(1500));
    let mut p = Proxy::start(&config(b.addr(), r#"{ prefix = "/", upstream = "a" }"#, ""));
    let public = p.addr("public");
    let mut idle = Client::connect(public);
    assert_eq!(idle.get("/fast").text(), "fast");

    let slow = std::thread::spawn(move || {
        let r = get(public, "/slow");
        (r, Instant::now())
    });
    b.wait_requests(2);
    let signalled = Instant::now();
    p.signal(libc::SIGTERM);
    assert!(p.wait_stderr(STOPPING, SETTLE), "SIGTERM was not handled:\n{}", p.stderr());
    // A few worker ticks for the workers to stop accepting.
    std::thread::sleep(Duration::from_millis(100));

    // A new connection is refused, or accepted by the kernel and never
    // served (see `sigterm_closes_every_listening_socket`).
    let mut probe = match TcpStream::connect_timeout(&public, Duration::from_millis(500)) {
        Ok(s) => {
            let mut c = Conn::new(s);
            c.write(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n");
            Some(c)
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
            None
        }
    };
    assert!(p.try_exit().is_none(), "the proxy exited with a request in flight");

    let (r, answered) = slow.join().expect("slow client");
    assert_eq!(r.status, 200);
    assert!(r.body == pattern(), "the in-flight response body is incomplete ({} bytes)", r.body.len());
    assert!(answered - signalled >= Duration::from_millis(1000), "answered too early: not the delayed response?");

    let status = p.wait_exit(Duration::from_secs(3)).expect("the proxy did not exit after the last response");
    assert!(status.success(), "exit status {status:?}");
    assert!(answered.elapsed() < Duration::from_secs(3));
    assert!(idle.conn.closed_within(Duration::from_secs(1)), "the idle keep-alive connection is still open");
    if let Some(c) = probe.as_mut() {
        let reply = read_reply(c);
        assert!(
            reply.closed && reply.bytes.is_empty(),
            "a connection made after SIGTERM was served: {:?}",
            reply.text()
        );
    }
    assert_eq!(b.requests().len(), 2, "nothing after the signal reached the backend");
}

#[test]

fn sigterm_closes_every_listening_socket() {
    let (b, _release) = slow_backend(Duration::from_millis(1500));
    let p = Proxy::start(&config(b.addr(), r#"{ prefix = "/", upstream = "a" }"#, ""));
    let public = p.addr("public");
    let slow = std::thread::spawn(move || get(public, "/slow").status);
    b.wait_requests(1);
    p.signal(libc::SIGTERM);
    assert!(p.wait_stderr(STOPPING, SETTLE), "SIGTERM was not handled:\n{}", p.stderr());
    // Two workers, one request in flight: one worker is idle when it stops.
    assert!(refused_within(public, Duration::from_secs(1)), "a listening socket still accepts after SIGTERM");
    assert_eq!(slow.join().expect("slow client"), 200);
}

#[test]

fn sigterm_never_leaves_an_idle_keepalive_connection_hanging() {
    let (b, release) = slow_backend(Duration::from_secs(5));
    let mut p = Proxy::start(&config(b.addr(), r#"{ prefix = "/", upstream = "a" }"#, ""));
    let public = p.addr("public");
    // Several connections, so that both workers most likely hold some.
    let mut idle: Vec<Client> = (0..6).map(|_| Client::connect(public)).collect();
    for c in &mut idle {
        assert_eq!(c.get("/fast").text(), "fast");
    }
    let slow = std::thread::spawn(move || exchange(public, b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"));
    b.wait_requests(7);
    p.signal(libc::SIGTERM);
    assert!(p.wait_stderr(STOPPING, SETTLE), "SIGTERM was not handled:\n{}", p.stderr());
    std::thread::sleep(Duration::from_millis(100));

    // With a request still in flight, a request on an idle connection is
    // either answered with `Connection: close`, or the connection is closed.
    for c in &mut idle {
        let _ = c.conn.stream.write_all(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n");
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    for (i, c) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        c.conn.stream.set_read_timeout(Some(left)).expect("read timeout");
        let reply = read_reply(&mut c.conn);
        match reply.responses().as_slice() {
            [] => assert!(reply.closed, "idle connection {i} hangs after SIGTERM: no answer, not closed"),
            [(200, head)] => {
                assert!(head.to_ascii_lowercase().contains("connection: close"), "connection {i}: {head}");
                assert!(reply.closed, "connection {i} stayed open after its last response");
            }
            other => panic!("connection {i}: unexpected {other:?}"),
        }
    }
    assert!(p.try_exit().is_none(), "the proxy exited with a request in flight");
    drop(release);
    let reply = slow.join().expect("slow client");
    assert_eq!(reply.statuses(), [200]);
    assert!(p.wait_exit(Duration::from_secs(3)).is_some_and(|s| s.success()));
}

#[test]

fn sigterm_marks_the_last_response_on_a_keepalive_connection_close() {
    let (b, _release) = slow_backend(Duration::from_millis(500));
    let mut p = Proxy::start(&config(b.addr(), r#"{ prefix = "/", upstream = "a" }"#, ""));
    let mut c = Client::connect(p.addr("public"));
    c.send(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n");
    b.wait_requests(1);
    p.signal(libc::SIGTERM);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == pattern());
    assert!(
        r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "the last response of a keep-alive connection during shutdown must say Connection: close: {}",
        r.raw_head
    );
    assert!(c.conn.closed_within(Duration::from_secs(2)));
    assert!(p.wait_exit(Duration::from_secs(3)).is_some_and(|s| s.success()));
}

#[test]
fn second_sigterm_exits_at_once_with_failure() {
    let (b, release) = slow_backend(Duration::from_secs(10));
    let mut p = Proxy::start(&config(b.addr(), r#"{ prefix = "/", upstream = "a" }"#, ""));
    let public = p.addr("public");
    let slow = std::thread::spawn(move || exchange(public, b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"));
    b.wait_requests(1);
    p.signal(libc::SIGTERM);
    // Wait until the first signal was handled: two signals of one kind that
    // arrive together may be merged into one.
    assert!(p.wait_stderr(STOPPING, SETTLE), "SIGTERM was not handled:\n{}", p.stderr());
    assert!(p.wait_exit(Duration::from_millis(300)).is_none(), "the first SIGTERM must wait for the request");

    let second = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(2)).expect("the second SIGTERM did not stop the proxy");
    assert!(second.elapsed() < Duration::from_secs(2));
    assert!(!status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    let reply = slow.join().expect("slow client");
    assert!(reply.closed && reply.statuses().is_empty(), "got {:?}", reply.text());
    drop(release);
}

// ---------------------------------------------------------------------------
// 5. Metrics move by exactly the requests sent.
// ---------------------------------------------------------------------------

#[test]
fn metrics_count_exactly_the_requests_sent() {
    let b1 = RecordingBackend::echo_id("b1");
    let b2 = RecordingBackend::echo_id("b2");
    let p = Proxy::start(&format!(
        r#"{}
[upstreams.all]
servers = ["{}", "{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "all" }}, {{ prefix = "/admin", status = 403 }} ]

[[listeners]]
name = "other"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/only", upstream = "all" }} ]
"#,
        header(""),
        b1.addr(),
        b2.addr()
    ));
    let before = scrape(&p);
    let ok_series = r#"ringway_requests_total{listener="public",route="/",upstream="all",code="200"}"#;
    let forbidden = r#"ringway_requests_total{listener="public",route="/admin",upstream="-",code="403"}"#;
    let not_found = r#"ringway_requests_total{listener="other",route="-",upstream="-",code="404"}"#;
    let success =
        |s: SocketAddr| format!(r#"ringway_upstream_requests_total{{upstream="all",server="{s}",outcome="success"}}"#);
    let health = |s: SocketAddr| format!(r#"ringway_upstream_health{{upstream="all",server="{s}"}}"#);
    assert_eq!(before.get(&health(b1.addr())), 1.0);
    assert_eq!(before.get(&health(b2.addr())), 1.0);

    let mut c1 = Client::connect(p.addr("public"));
    for i in 0..10 {
        assert_eq!(c1.get(&format!("/r{i}")).status, 200);
    }
    let mut c2 = Client::connect(p.addr("public"));
    for _ in 0..3 {
        assert_eq!(c2.get("/admin").status, 403);
    }
    let mut c3 = Client::connect(p.addr("other"));
    for _ in 0..2 {
        assert_eq!(c3.get("/nope").status, 404);
    }

    let after = wait_metric(&p, DURATION_COUNT, before.get(DURATION_COUNT) + 15.0);
    assert_eq!(after.get(ok_series) - before.get(ok_series), 10.0);
    assert_eq!(after.get(forbidden) - before.get(forbidden), 3.0);
    assert_eq!(after.get(not_found) - before.get(not_found), 2.0);
    assert_eq!(after.sum("ringway_requests_total{") - before.sum("ringway_requests_total{"), 15.0);
    let inf = r#"ringway_request_duration_seconds_bucket{le="+Inf"}"#;
    assert_eq!(after.get(inf) - before.get(inf), 15.0);
    assert!(after.get("ringway_request_duration_seconds_sum") > before.get("ringway_request_duration_seconds_sum"));

    // Per server: what each backend saw, and the rotation is exact.
    for b in [&b1, &b2] {
        let n = after.get(&success(b.addr())) - before.get(&success(b.addr()));
        assert_eq!(n, b.requests().len() as f64, "success count of {}", b.addr());
        assert_eq!(n, 5.0, "round robin over two servers");
    }
    assert_eq!(after.sum("ringway_upstream_requests_total{"), 10.0, "no failed attempts");
    assert_eq!(after.get("ringway_retries_total"), 0.0);

    // Connection reuse: one keep-alive client, so at most one connection per
    // server per worker, and the metric matches what the backends accepted.
    let connects = after.sum("ringway_upstream_connects_total{");
    assert!(connects <= 2.0 * 2.0, "{connects} upstream connects for 10 keep-alive requests");
    assert_eq!(connects, (b1.connections_accepted() + b2.connections_accepted()) as f64);
    assert!(after.sum("ringway_upstream_connections{") >= 1.0, "pooled connections are reported");

    // Open client connections per listener.
    wait_metric(&p, r#"ringway_connections{listener="public"}"#, 2.0);
    wait_metric(&p, r#"ringway_connections{listener="other"}"#, 1.0);
    drop((c1, c2, c3));
    let deadline = Instant::now() + SETTLE;
    while scrape(&p).sum("ringway_connections{") > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(scrape(&p).sum("ringway_connections{"), 0.0, "closed connections are still counted");
    assert_eq!(scrape(&p).get(DURATION_COUNT), after.get(DURATION_COUNT), "scrapes are not requests");
}

// ---------------------------------------------------------------------------
// 6. Drain and enable.
// ---------------------------------------------------------------------------

#[test]
fn drain_and_enable_change_the_rotation() {
    let bs = [RecordingBackend::echo_id("s0"), RecordingBackend::echo_id("s1"), RecordingBackend::echo_id("s2")];
    let addrs: Vec<SocketAddr> = bs.iter().map(RecordingBackend::addr).collect();
    let p = Proxy::start(&format!(
        r#"{}
[upstreams.three]
servers = ["{}", "{}", "{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "three" }} ]
"#,
        header(""),
        addrs[0],
        addrs[1],
        addrs[2]
    ));
    let counts = || bs.iter().map(|b| b.requests().len()).collect::<Vec<_>>();
    assert!(addrs.iter().all(|a| !drained(&p, "three", *a)));

    let r = admin_post(&p, &format!("/upstreams/three/servers/{}/drain", addrs[1]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(drained(&p, "three", addrs[1]));
    assert!(!drained(&p, "three", addrs[0]) && !drained(&p, "three", addrs[2]));
    let health = format!(r#"ringway_upstream_health{{upstream="three",server="{}"}}"#, addrs[1]);
    assert_eq!(scrape(&p).get(&health), 0.0, "a drained server reports health 0");

    let mut c = Client::connect(p.addr("public"));
    for i in 0..6 {
        assert_eq!(c.get(&format!("/d{i}")).status, 200);
    }
    let drained_counts = counts();
    assert_eq!(drained_counts[1], 0, "the drained server got requests: {drained_counts:?}");
    assert!(drained_counts[0] > 0 && drained_counts[2] > 0, "{drained_counts:?}");
    assert_eq!(drained_counts.iter().sum::<usize>(), 6);

    let r = admin_post(&p, &format!("/upstreams/three/servers/{}/enable", addrs[1]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(addrs.iter().all(|a| !drained(&p, "three", *a)));
    assert_eq!(scrape(&p).get(&health), 1.0);
    for i in 0..6 {
        assert_eq!(c.get(&format!("/e{i}")).status, 200);
    }
    let enabled: Vec<usize> = counts().iter().zip(&drained_counts).map(|(now, then)| now - then).collect();
    assert_eq!(enabled, [2, 2, 2], "six requests over three enabled servers");

    for path in [
        format!("/upstreams/nope/servers/{}/drain", addrs[0]),
        "/upstreams/three/servers/127.0.0.1:1/drain".to_string(),
        "/upstreams/three/servers/not-an-address/enable".to_string(),
        format!("/upstreams/three/servers/{}/explode", addrs[0]),
    ] {
        assert_eq!(admin_post(&p, &path).status, 404, "{path}");
    }
    assert!(addrs.iter().all(|a| !drained(&p, "three", *a)));
}

// ---------------------------------------------------------------------------
// 7. Access log.
// ---------------------------------------------------------------------------

fn logging_proxy(b: &RecordingBackend, log: &Path, format: &str) -> Proxy {
    Proxy::start(&config(
        b.addr(),
        r#"{ prefix = "/", upstream = "a" }, { prefix = "/admin", status = 403 }"#,
        &format!("\n[access_log]\npath = \"{}\"\nformat = \"{format}\"\n", log.display()),
    ))
}

/// Checks one combined line: `IP - - [dd/Mon/yyyy:HH:MM:SS +0000]
/// "REQUEST" STATUS BYTES "REFERER" "UA" DURATION_MS UPSTREAM "ROUTE"`.
fn assert_combined(
    line: &str,
    request: &str,
    status: u16,
    bytes: usize,
    referer_ua: &str,
    upstream: &str,
    route: &str,
) {
    let rest = line.strip_prefix("127.0.0.1 - - [").unwrap_or_else(|| panic!("bad start: {line}"));
    let (time, rest) = rest.split_once("] ").unwrap_or_else(|| panic!("no time: {line}"));
    let t = time.as_bytes();
    assert!(
        t.len() == 26
            && t[2] == b'/'
            && t[6] == b'/'
            && t[11] == b':'
            && time.ends_with(" +0000")
            && ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .contains(&&time[3..6]),
        "bad time {time:?} in {line}"
    );
    let head = format!("\"{request} HTTP/1.1\" {status} {bytes} {referer_ua} ");
    let rest = rest.strip_prefix(&head).unwrap_or_else(|| panic!("expected {head:?} in {line}"));
    let tail = format!(" {upstream} \"{route}\"");
    let duration = rest.strip_suffix(&tail).unwrap_or_else(|| panic!("expected {tail:?} at the end of {line}"));
    let ms: f64 = duration.parse().unwrap_or_else(|_| panic!("bad duration {duration:?} in {line}"));
    assert!((0.0..10_000.0).contains(&ms), "{line}");
}

#[test]
fn access_log_combined_one_line_per_request_and_reopen_on_sigusr1() {
    let b = RecordingBackend::echo_id("a");
    let log = TempFile::new("access");
    let p = logging_proxy(&b, &log.0, "combined");
    let upstream = b.addr().to_string();

    let mut c = Client::connect(p.addr("public"));
    let r1 = c.request(b"GET /app?q=1 HTTP/1.1\r\nHost: t\r\nReferer: http://ref/\r\nUser-Agent: ops-test/1\r\n\r\n");
    assert_eq!(r1.status, 200);
    let r2 = c.request(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r2.status, 200);
    let r3 = c.get("/admin/x");
    assert_eq!(r3.status, 403);

    let lines = wait_log_lines(&log.0, 3);
    assert_combined(&lines[0], "GET /app?q=1", 200, r1.body.len(), "\"http://ref/\" \"ops-test/1\"", &upstream, "/");
    assert_combined(&lines[1], "POST /form", 200, r2.body.len(), "\"-\" \"-\"", &upstream, "/");
    assert_combined(&lines[2], "GET /admin/x", 403, r3.body.len(), "\"-\" \"-\"", "-", "/admin");

    // Rotation: move the file away, SIGUSR1, and the writer creates a new
    // file at the original path.
    std::fs::rename(&log.0, log.rotated()).expect("rotate");
    p.signal(libc::SIGUSR1);
    let deadline = Instant::now() + SETTLE;
    while !log.0.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(log.0.exists(), "SIGUSR1 did not reopen the access log at its path");
    let r4 = c.get("/after-rotation");
    let r5 = get(p.addr("public"), "/admin");
    let new = wait_log_lines(&log.0, 2);
    // Two connections, maybe two workers: their lines may come in any order.
    let find = |target: &str| new.iter().find(|l| l.contains(target)).unwrap_or_else(|| panic!("{target}: {new:?}"));
    assert_combined(find("/after-rotation"), "GET /after-rotation", 200, r4.body.len(), "\"-\" \"-\"", &upstream, "/");
    assert_combined(find("GET /admin "), "GET /admin", 403, r5.body.len(), "\"-\" \"-\"", "-", "/admin");
    assert_eq!(read_lines(&log.rotated()), lines, "the rotated file must keep exactly the old lines");
}

#[test]
fn access_log_json_lines_parse_with_the_right_fields() {
    let b = RecordingBackend::echo_id("a");
    let log = TempFile::new("access-json");
    let p = logging_proxy(&b, &log.0, "json");
    let mut c = Client::connect(p.addr("public"));
    let client = c.conn.stream.local_addr().expect("local addr").to_string();
    let r1 = c.request(b"GET /j?x=\"1\" HTTP/1.1\r\nHost: t\r\nReferer: r\r\nUser-Agent: ua \"q\"\r\n\r\n");
    assert_eq!(r1.status, 200);
    let r2 = c.request(b"HEAD /admin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r2.status, 403);

    let lines = wait_log_lines(&log.0, 2);
    let v: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let keys = [
        "time",
        "client",
        "method",
        "target",
        "protocol",
        "status",
        "bytes",
        "duration_ms",
        "upstream",
        "route",
        "referer",
        "user_agent",
    ];
    for (line, v) in lines.iter().zip(&v) {
        let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        for k in keys {
            assert!(obj.contains_key(k), "no {k} in {line}");
        }
        assert_eq!(obj.len(), keys.len(), "unexpected keys in {line}");
        let time = v["time"].as_str().expect("time");
        let t = time.as_bytes();
        assert!(t.len() == 20 && t[4] == b'-' && t[10] == b'T' && time.ends_with('Z'), "time {time}");
        assert_eq!(v["client"], client.as_str());
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    }
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["target"], "/j?x=\"1\"");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["bytes"], r1.body.len());
    assert_eq!(v[0]["upstream"], b.addr().to_string());
    assert_eq!(v[0]["route"], "/");
    assert_eq!(v[0]["referer"], "r");
    assert_eq!(v[0]["user_agent"], "ua \"q\"");
    assert_eq!(v[1]["method"], "HEAD");
    assert_eq!(v[1]["target"], "/admin");
    assert_eq!(v[1]["status"], 403);
    assert_eq!(v[1]["bytes"], 0, "a HEAD answer sends no body");
    assert!(v[1]["upstream"].is_null());
    assert_eq!(v[1]["route"], "/admin");
}

// ---------------------------------------------------------------------------
// 8. Listeners opened and closed on reload.
// ---------------------------------------------------------------------------

#[test]
fn reload_closes_removed_listeners_and_opens_added_ones() {
    let a = RecordingBackend::echo_id("a");
    let route = r#"{ prefix = "/", upstream = "a" }"#;
    let v1 = config(
        a.addr(),
        route,
        &format!("\n[[listeners]]\nname = \"internal\"\nbind = \"127.0.0.1:0\"\nroutes = [ {route} ]\n"),
    );
    let p = Proxy::start(&v1);
    let (public, internal) = (p.addr("public"), p.addr("internal"));
    assert_eq!(get(internal, "/i").text(), "a /i\n");
    let mut kept = Client::connect(public);
    assert_eq!(kept.get("/p").text(), "a /p\n");

    // Remove `internal`, add `extra` on a port that was free a moment ago.
    let port = free_port();
    let v2 = config(
        a.addr(),
        route,
        &format!("\n[[listeners]]\nname = \"extra\"\nbind = \"127.0.0.1:{port}\"\nroutes = [ {route} ]\n"),
    );
    p.rewrite_config(&v2);
    p.signal(libc::SIGHUP);
    wait_metric(&p, RELOAD_OK, 1.0);

    assert!(refused_within(internal, SETTLE), "the removed listener still accepts connections");
    assert_eq!(get(public, "/p2").text(), "a /p2\n", "the kept listener serves new connections");
    assert_eq!(kept.get("/p3").text(), "a /p3\n", "and its open connections");
    let extra = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(extra, "/e").text(), "a /e\n", "the added listener serves");
}

#[test]
fn reload_with_an_unbindable_listener_is_refused() {
    let a = RecordingBackend::echo_id("a");
    let route = r#"{ prefix = "/", upstream = "a" }"#;
    let p = Proxy::start(&config(a.addr(), route, ""));
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    p.rewrite_config(&config(
        a.addr(),
        r#"{ prefix = "/", status = 403 }"#,
        &format!("\n[[listeners]]\nname = \"clash\"\nbind = \"127.0.0.1:{port}\"\nroutes = [ {route} ]\n"),
    ));
    let r = admin_post(&p, "/reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&format!("127.0.0.1:{port}")), "{}", r.text());
    let m = scrape(&p);
    assert_eq!((m.get(RELOAD_OK), m.get(RELOAD_FAILED)), (0.0, 1.0));
    assert_eq!(get(p.addr("public"), "/x").status, 200, "the old routes stay");
}

// ---------------------------------------------------------------------------
// 9. Health, and the admin API stays off the public listeners.
// ---------------------------------------------------------------------------

#[test]
fn health_and_admin_endpoints_are_not_on_public_listeners() {
    let a = RecordingBackend::echo_id("a");
    let p = Proxy::start(&config(
        a.addr(),
        r#"{ prefix = "/", upstream = "a" }"#,
        "\n[[listeners]]\nname = \"bare\"\nbind = \"127.0.0.1:0\"\nroutes = [ { prefix = \"/x\", status = 204 } ]\n",
    ));
    let h = admin_get(&p, "/health");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let admin = p.admin_addr();
    assert!(admin != p.addr("public") && admin != p.addr("bare"));
    assert_eq!(admin_get(&p, "/nothing").status, 404);
    assert_eq!(admin_get(&p, "/reload").status, 405);

    // On the public listeners the admin paths are ordinary paths.
    for path in ["/metrics", "/status", "/health"] {
        let r = get(p.addr("public"), path);
        assert_eq!((r.status, r.text()), (200, format!("a {path}\n")), "{path} must go to the route");
        let r = get(p.addr("bare"), path);
        assert_eq!(r.status, 404, "{path} on a listener without a matching route");
        assert!(!r.text().contains("ringway_"), "{}", r.text());
    }
    let r = request(p.addr("public"), b"POST /reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.text(), "a /reload\n");
    let r = request(
        p.addr("public"),
        b"POST /upstreams/a/servers/x/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let targets: Vec<String> = a.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/metrics", "/status", "/health", "/reload", "/upstreams/a/servers/x/drain"]);
    let m = scrape(&p);
    assert_eq!((m.get(RELOAD_OK), m.get(RELOAD_FAILED)), (0.0, 0.0), "a public POST /reload must not reload");
}

/// Connections are file descriptors: a soft limit below the hard one (a
/// container's 1024) is raised at start.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    use std::io::BufRead;
    let Ok(true) = std::process::Command::new("prlimit").arg("--version").output().map(|o| o.status.success()) else {
        return;
    };
    let config = unique_temp_path("nofile", ".toml");
    std::fs::write(&config, "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n").expect("config");
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=256:4096", "--"])
        .arg(bin())
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read") > 0 && !line.contains("ringway listening") {
        line.clear();
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&config);
    let files = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    let fields: Vec<&str> = files.split_whitespace().collect();
    assert_eq!(fields[3..5], ["4096", "4096"], "{files}");
}

/// A quiet proxy closes its idle upstream connections once their
/// `idle_timeout` passes (issue 16), not only when the pool is next used.
#[test]
fn idle_upstream_connections_close_after_idle_timeout_without_traffic() {
    let b = RecordingBackend::start(|_| ok("x"));
    let p = Proxy::start(&format!(
        "[upstreams.x]\nservers = [\"{}\"]\nidle_timeout = \"300ms\"\n[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", upstream = \"x\" }} ]\n",
        b.addr()
    ));
    assert_eq!(get(p.addr("public"), "/").status, 200);
    assert_eq!(b.connections_closed(), 0, "pooled after the request");
    let began = std::time::Instant::now();
    // The sweep runs once a second: 300 ms, plus up to a second, plus slack.
    assert!(b.wait_until(|_, closed| closed >= 1), "the pooled connection was never closed");
    assert!(began.elapsed() < Duration::from_secs(3), "closed only after {:?}", began.elapsed());
}
