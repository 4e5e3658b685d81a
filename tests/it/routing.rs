//! Routing: round-robin rotation, longest-prefix routes, local status routes,
//! path-normalization bypass attempts, strip_prefix, dead servers.

use crate::support::*;
use std::net::SocketAddr;

/// The App ID in a demo-style body (`... App ID = N\n`).
fn app_id(body: &str) -> String {
    body.rsplit("App ID = ").next().unwrap_or("").trim().to_string()
}

/// Asserts `got` is `order` rotated, walked consecutively from any start.
fn assert_rotation(got: &[String], order: &[String]) {
    let start = order
        .iter()
        .position(|o| *o == got[0])
        .unwrap_or_else(|| panic!("{} is not a configured server ({order:?})", got[0]));
    let expected: Vec<String> = (0..got.len()).map(|i| order[(start + i) % order.len()].clone()).collect();
    assert_eq!(got, expected.as_slice(), "requests must rotate through the servers in config order");
    for o in order {
        let n = got.iter().filter(|g| *g == o).count();
        assert_eq!(n, got.len() / order.len(), "server {o} answered {n} times in {got:?}");
    }
}

/// A backend answering like the demo app, with its own ID.
fn demo_like(id: u16) -> RecordingBackend {
    RecordingBackend::start(move |r| {
        let path = r.target().split('?').next().unwrap_or("/").to_ascii_lowercase();
        let seg = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        let text = if seg("/app1") {
            "this is app1"
        } else if seg("/app2") {
            "this is app2"
        } else if seg("/admin") {
            "admin page"
        } else {
            "hello from a lightweight container"
        };
        ok(&format!("{text}. App ID = {id}\n"))
    })
}

/// The seed layout over four recording backends; `public` and `internal`.
fn seed_proxy(b: &[RecordingBackend]) -> Proxy {
    let a: Vec<String> = b.iter().map(|b| b.addr().to_string()).collect();
    Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.allbackend]
servers = ["{}", "{}", "{}", "{}"]

[upstreams.app1backend]
servers = ["{}", "{}"]

[upstreams.app2backend]
servers = ["{}", "{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [
  {{ prefix = "/",      upstream = "allbackend" }},
  {{ prefix = "/app1",  upstream = "app1backend" }},
  {{ prefix = "/app2",  upstream = "app2backend" }},
  {{ prefix = "/admin", status = 403 }},
]

[[listeners]]
name = "internal"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "allbackend" }} ]
"#,
        a[0], a[1], a[2], a[3], a[0], a[1], a[2], a[3]
    ))
}

fn four_backends() -> Vec<RecordingBackend> {
    (1..=4).map(demo_like).collect()
}

fn ids(b: &[RecordingBackend]) -> Vec<String> {
    (1..=b.len()).map(|i| i.to_string()).collect()
}

#[test]
fn rotation_is_exact_across_new_connections() {
    let demos: Vec<DemoBackend> = (0..4).map(|_| DemoBackend::start()).collect();
    let a: Vec<String> = demos.iter().map(|d| d.addr().to_string()).collect();
    let proxy = Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.all]
servers = ["{}", "{}", "{}", "{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "all" }} ]
"#,
        a[0], a[1], a[2], a[3]
    ));
    let order: Vec<String> = demos.iter().map(|d| d.addr().port().to_string()).collect();
    let got: Vec<String> = (0..8)
        .map(|_| {
            let r = get(proxy.addr("public"), "/");
            assert_eq!(r.status, 200, "{}", r.raw_head);
            assert!(r.text().starts_with("hello from a lightweight container. App ID = "), "{}", r.text());
            app_id(&r.text())
        })
        .collect();
    assert_rotation(&got, &order);
}

#[test]
fn rotation_is_exact_within_one_keepalive_connection() {
    let b = four_backends();
    let proxy = seed_proxy(&b);
    let mut c = Client::connect(proxy.addr("public"));
    let got: Vec<String> = (0..8)
        .map(|_| {
            let r = c.get("/");
            assert_eq!(r.status, 200, "{}", r.raw_head);
            app_id(&r.text())
        })
        .collect();
    assert_rotation(&got, &ids(&b));
}

#[test]
fn app1_and_app2_rotate_over_their_own_two_servers() {
    let b = four_backends();
    let proxy = seed_proxy(&b);
    let mut c = Client::connect(proxy.addr("public"));
    for (path, text, servers) in [("/app1", "this is app1", ["1", "2"]), ("/app2", "this is app2", ["3", "4"])] {
        let order: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let got: Vec<String> = (0..6)
            .map(|i| {
                // Alternate new and reused connections.
                let r = if i % 2 == 0 { c.get(path) } else { get(proxy.addr("public"), path) };
                assert_eq!(r.status, 200, "{}", r.raw_head);
                assert!(r.text().starts_with(text), "{path}: {}", r.text());
                app_id(&r.text())
            })
            .collect();
        assert_rotation(&got, &order);
    }
}

#[test]
fn admin_is_refused_on_public_and_served_on_internal() {
    let b = four_backends();
    let proxy = seed_proxy(&b);
    let r = get(proxy.addr("public"), "/admin");
    assert_eq!(r.status, 403, "{}", r.raw_head);
    assert!(r.raw_head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{}", r.raw_head);
    assert_eq!(r.text(), "403 Forbidden\n");
    assert!(b.iter().all(|b| b.requests().is_empty()), "a refused request reached a backend");

    let r = get(proxy.addr("internal"), "/admin");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.text().starts_with("admin page. App ID = "), "{}", r.text());
    let seen: Vec<String> = b.iter().flat_map(|b| b.requests()).map(|r| r.target().to_string()).collect();
    assert_eq!(seen, ["/admin"]);
}

#[test]
fn admin_bypass_forms_are_refused_on_public() {
    let b = four_backends();
    let proxy = seed_proxy(&b);
    let paths = [
        "//admin",
        "/./admin",
        "/%61dmin",
        "/%41dmin",
        "/app1/../admin",
        "/app1/%2e%2e/admin",
        "/admin/x",
        "/admin?x=1",
        "/ADMIN",
        "/Admin/",
    ];
    let mut requests: Vec<(String, Vec<u8>)> =
        paths.iter().map(|p| (p.to_string(), format!("GET {p} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes())).collect();
    requests.push((
        "absolute-form http://host/admin".into(),
        b"GET http://host/admin HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
    ));
    for (name, bytes) in &requests {
        let raw = send_raw_opts(proxy.addr("public"), bytes, true);
        let status = status_of(&raw);
        assert!(
            matches!(status, Some(403) | Some(400)),
            "{name}: expected 403 or 400, got {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    let reached: Vec<String> = b.iter().flat_map(|b| b.requests()).map(|r| r.target().to_string()).collect();
    assert!(!reached.iter().any(|t| t.to_ascii_lowercase().contains("admin")), "admin reached a backend: {reached:?}");
    assert!(reached.is_empty(), "refused requests reached backends: {reached:?}");
    // The same listener still proxies ordinary requests.
    assert_eq!(get(proxy.addr("public"), "/app1").status, 200);
}

#[test]
fn prefix_match_is_segment_aligned() {
    let b = four_backends();
    let proxy = seed_proxy(&b);
    let r = get(proxy.addr("public"), "/app10");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert!(r.text().starts_with("hello from a lightweight container"), "/app10 went to {}", r.text());
    let r = get(proxy.addr("public"), "/app1/x");
    assert!(r.text().starts_with("this is app1"), "/app1/x went to {}", r.text());
    let r = get(proxy.addr("public"), "/APP1");
    assert!(r.text().starts_with("this is app1"), "/APP1 went to {}", r.text());
}

#[test]
fn unknown_route_without_root_route_is_404() {
    let b = RecordingBackend::echo_id("x");
    let proxy = proxy_with_route(b.addr(), "/only");
    let r = get(proxy.addr("public"), "/elsewhere");
    assert_eq!(r.status, 404, "{}", r.raw_head);
    assert_eq!(r.text(), "404 Not Found\n");
    let r = get(proxy.addr("public"), "/");
    assert_eq!(r.status, 404, "{}", r.raw_head);
    assert!(b.requests().is_empty());
    assert_eq!(get(proxy.addr("public"), "/only/x").status, 200);
}

fn strip_proxy(b: &RecordingBackend) -> Proxy {
    Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.x]
servers = ["{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [
  {{ prefix = "/strip", upstream = "x", strip_prefix = true }},
  {{ prefix = "/keep", upstream = "x" }},
]
"#,
        b.addr()
    ))
}

#[test]
fn strip_prefix_removes_the_matched_prefix() {
    let b = RecordingBackend::echo_id("x");
    let proxy = strip_proxy(&b);
    for (sent, expected) in
        [("/strip/echo?q=1", "/echo?q=1"), ("/strip", "/"), ("/strip/", "/"), ("/STRIP/a/b", "/a/b")]
    {
        let r = get(proxy.addr("public"), sent);
        assert_eq!(r.status, 200, "{sent}: {}", r.raw_head);
        assert_eq!(r.text(), format!("x {expected}\n"), "{sent}");
    }
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/echo?q=1", "/", "/", "/a/b"]);
}

#[test]
fn without_strip_prefix_the_path_is_unchanged() {
    let b = RecordingBackend::echo_id("x");
    let proxy = strip_proxy(&b);
    for sent in ["/keep/echo?q=1", "/keep"] {
        let r = get(proxy.addr("public"), sent);
        assert_eq!(r.status, 200, "{sent}: {}", r.raw_head);
    }
    let targets: Vec<String> = b.requests().iter().map(|r| r.target().to_string()).collect();
    assert_eq!(targets, ["/keep/echo?q=1", "/keep"]);
}

fn one_upstream(servers: &[SocketAddr]) -> Proxy {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.x]
servers = [{}]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "x" }} ]
"#,
        list.join(", ")
    ))
}

#[test]
fn a_dead_server_is_skipped() {
    let live = RecordingBackend::echo_id("live");
    let dead = dead_addr();
    let proxy = one_upstream(&[dead.addr, live.addr()]);
    for i in 0..6 {
        let r = get(proxy.addr("public"), &format!("/r{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.raw_head);
        assert_eq!(r.text(), format!("live /r{i}\n"));
    }
    assert_eq!(live.requests().len(), 6);
}

#[test]
fn all_servers_down_is_502() {
    let (d1, d2) = (dead_addr(), dead_addr());
    let proxy = one_upstream(&[d1.addr, d2.addr]);
    let r = get(proxy.addr("public"), "/");
    assert_eq!(r.status, 502, "{}", r.raw_head);
    assert!(r.raw_head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{}", r.raw_head);
}

/// The epoll fallback serves the same routes with the same exact rotation.
#[test]
fn epoll_driver_routes_and_rotates_the_same() {
    let b = four_backends();
    let a: Vec<String> = b.iter().map(|b| b.addr().to_string()).collect();
    let proxy = Proxy::start(&format!(
        r#"[runtime]
threads = 2
driver = "epoll"

[upstreams.all]
servers = ["{}", "{}", "{}", "{}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "all" }}, {{ prefix = "/admin", status = 403 }} ]
"#,
        a[0], a[1], a[2], a[3]
    ));
    let got: Vec<String> = (0..8).map(|_| app_id(&get(proxy.addr("public"), "/").text())).collect();
    assert_rotation(&got, &ids(&b));
    assert_eq!(get(proxy.addr("public"), "/ADMIN").status, 403);
    assert!(b.iter().all(|b| b.requests().iter().all(|r| !r.target().to_ascii_lowercase().contains("admin"))));
}
