//! Drains through the admin API (issue 12): a drain in one upstream
//! (`POST /upstreams/NAME/servers/ADDR/drain`) leaves the address in every
//! other upstream that lists it; a drain everywhere (`POST
//! /servers/ADDR/drain`) takes it out of all of them. `/status` and
//! `ringway_upstream_health` show both per upstream, and a drain lasts
//! across reloads for as long as the config lists the server. Each test
//! runs the real binary against real loopback backends.

use crate::support::faults::FaultBackend;
use crate::support::*;
use std::net::SocketAddr;

/// Upstream `all` = `all` servers, upstream `app1` = `app1` servers, routed
/// by prefix `/all` and `/app1`; two workers, an admin listener, info logs.
fn config(all: &[SocketAddr], app1: &[SocketAddr]) -> String {
    let list = |s: &[SocketAddr]| s.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.all]
servers = [{all}]

[upstreams.app1]
servers = [{app1}]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/all", upstream = "all" }}, {{ prefix = "/app1", upstream = "app1" }} ]
"#,
        header = runtime_config(2, &[], &[]).replace("log_level = \"warn\"", "log_level = \"info\""),
        all = list(all),
        app1 = list(app1),
    )
}

fn admin_post(p: &Proxy, path: &str) -> Response {
    let head = format!("POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    request(p.admin_addr(), head.as_bytes())
}

fn post_ok(p: &Proxy, path: &str) -> String {
    let r = admin_post(p, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

/// Server `addr` of upstream `upstream` in `/status`.
fn status_of(p: &Proxy, upstream: &str, addr: SocketAddr) -> serde_json::Value {
    let r = request(p.admin_addr(), b"GET /status HTTP/1.1\r\nHost: admin\r\n\r\n");
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("/status is JSON");
    let up = doc["upstreams"].as_array().expect("upstreams").iter().find(|u| u["name"] == upstream).cloned();
    let up = up.unwrap_or_else(|| panic!("no upstream {upstream} in {doc}"));
    let s = up["servers"].as_array().expect("servers").iter().find(|s| s["addr"] == addr.to_string()).cloned();
    s.unwrap_or_else(|| panic!("no server {addr} in {up}"))
}

/// (drained, drained_in_upstream, drained_everywhere, healthy) in `/status`.
fn drain_flags(p: &Proxy, upstream: &str, addr: SocketAddr) -> (bool, bool, bool, bool) {
    let s = status_of(p, upstream, addr);
    let flag = |k: &str| s[k].as_bool().unwrap_or_else(|| panic!("{k} is not a bool in {s}"));
    (flag("drained"), flag("drained_in_upstream"), flag("drained_everywhere"), flag("healthy"))
}

/// `ringway_upstream_health{upstream, server}`.
fn health(p: &Proxy, upstream: &str, addr: SocketAddr) -> u8 {
    let r = request(p.admin_addr(), b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    let series = format!("ringway_upstream_health{{upstream=\"{upstream}\",server=\"{addr}\"}} ");
    let text = r.text();
    let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].parse().expect("health value")
}

/// `n` GETs through `prefix` on one connection: how many each backend got.
fn tally(p: &Proxy, prefix: &str, n: usize, backends: &[&FaultBackend]) -> Vec<usize> {
    let before: Vec<usize> = backends.iter().map(|b| b.request_count()).collect();
    let mut c = Client::connect(p.addr("public"));
    for i in 0..n {
        let r = c.get(&format!("{prefix}/{i}"));
        assert_eq!(r.status, 200, "{prefix}/{i}: {}{}", r.raw_head, r.text());
    }
    backends.iter().zip(before).map(|(b, then)| b.request_count() - then).collect()
}

#[test]
fn a_drain_in_one_upstream_leaves_the_server_in_the_others() {
    let bs = [FaultBackend::start("s0"), FaultBackend::start("s1"), FaultBackend::start("s2")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let [s0, s1, s2] = [bs[0].addr(), bs[1].addr(), bs[2].addr()];
    let p = Proxy::start(&config(&[s0, s1], &[s0, s2]));

    let body = post_ok(&p, &format!("/upstreams/all/servers/{s0}/drain"));
    assert_eq!(body, format!("drained {s0} in upstream all\n"));
    assert_eq!(tally(&p, "/all", 10, &all), [0, 10, 0], "s0 is drained in all");
    assert_eq!(tally(&p, "/app1", 10, &all), [5, 0, 5], "s0 stays in app1's rotation");
    assert_eq!(drain_flags(&p, "all", s0), (true, true, false, false));
    assert_eq!(drain_flags(&p, "app1", s0), (false, false, false, true));
    assert_eq!((health(&p, "all", s0), health(&p, "app1", s0)), (0, 1));
    assert!(p.wait_stderr(&format!("upstream all server {s0}: drained"), std::time::Duration::from_secs(2)));

    post_ok(&p, &format!("/upstreams/all/servers/{s0}/enable"));
    assert_eq!(drain_flags(&p, "all", s0), (false, false, false, true));
    assert_eq!(tally(&p, "/all", 10, &all), [5, 5, 0]);
    assert_eq!(health(&p, "all", s0), 1);
}

#[test]
fn a_drain_everywhere_takes_the_server_out_of_every_upstream() {
    let bs = [FaultBackend::start("s0"), FaultBackend::start("s1"), FaultBackend::start("s2")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let [s0, s1, s2] = [bs[0].addr(), bs[1].addr(), bs[2].addr()];
    let p = Proxy::start(&config(&[s0, s1], &[s0, s2]));

    let body = post_ok(&p, &format!("/servers/{s0}/drain"));
    assert_eq!(body, format!("drained {s0} in every upstream (all, app1)\n"));
    assert_eq!(tally(&p, "/all", 10, &all), [0, 10, 0]);
    assert_eq!(tally(&p, "/app1", 10, &all), [0, 0, 10]);
    for up in ["all", "app1"] {
        assert_eq!(drain_flags(&p, up, s0), (true, false, true, false), "{up}");
        assert_eq!(health(&p, up, s0), 0, "{up}");
    }

    // The two switches are independent: enabling s0 in app1 does not undo
    // the drain everywhere, and the answer says so.
    let body = post_ok(&p, &format!("/upstreams/app1/servers/{s0}/drain"));
    assert_eq!(body, format!("drained {s0} in upstream app1\n"));
    let body = post_ok(&p, &format!("/servers/{s0}/enable"));
    assert!(
        body.contains(&format!("still drained in upstream app1: POST /upstreams/app1/servers/{s0}/enable")),
        "{body}"
    );
    assert_eq!(tally(&p, "/app1", 4, &all), [0, 0, 4], "still drained in app1");
    assert_eq!(tally(&p, "/all", 4, &all), [2, 2, 0], "back in all");
    post_ok(&p, &format!("/servers/{s0}/drain"));
    let body = post_ok(&p, &format!("/upstreams/app1/servers/{s0}/enable"));
    assert!(body.contains(&format!("still drained everywhere: POST /servers/{s0}/enable")), "{body}");
    post_ok(&p, &format!("/servers/{s0}/enable"));
    assert_eq!(tally(&p, "/app1", 4, &all), [2, 0, 2], "back in app1");

    for path in [
        "/servers/127.0.0.1:1/drain".to_string(),
        "/servers/not-an-address/drain".to_string(),
        format!("/servers/{s0}/explode"),
        format!("/servers/{s0}/drain/more"),
    ] {
        assert_eq!(admin_post(&p, &path).status, 404, "{path}");
    }
    assert_eq!(drain_flags(&p, "all", s0), (false, false, false, true));
}

#[test]
fn drains_last_across_reloads_while_the_config_lists_the_server() {
    let bs = [FaultBackend::start("s0"), FaultBackend::start("s1"), FaultBackend::start("s2")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let [s0, s1, s2] = [bs[0].addr(), bs[1].addr(), bs[2].addr()];
    let p = Proxy::start(&config(&[s0, s1], &[s0, s2]));
    post_ok(&p, &format!("/upstreams/all/servers/{s0}/drain"));
    post_ok(&p, &format!("/servers/{s2}/drain"));

    // A reload that keeps both servers keeps both drains.
    p.rewrite_config(&config(&[s0, s1], &[s0, s2, s1]));
    post_ok(&p, "/reload");
    assert_eq!(drain_flags(&p, "all", s0), (true, true, false, false));
    assert_eq!(drain_flags(&p, "app1", s0), (false, false, false, true));
    assert_eq!(drain_flags(&p, "app1", s2), (true, false, true, false));
    assert_eq!(tally(&p, "/all", 6, &all), [0, 6, 0]);
    assert_eq!(tally(&p, "/app1", 6, &all), [3, 3, 0]);

    // A reload that drops s0 from all and s2 from every upstream forgets
    // their drains: added back later, they start in rotation.
    p.rewrite_config(&config(&[s1], &[s0, s1]));
    post_ok(&p, "/reload");
    p.rewrite_config(&config(&[s0, s1], &[s0, s2]));
    post_ok(&p, "/reload");
    assert_eq!(drain_flags(&p, "all", s0), (false, false, false, true));
    assert_eq!(drain_flags(&p, "app1", s2), (false, false, false, true));
    assert_eq!(tally(&p, "/all", 6, &all), [3, 3, 0]);
    assert_eq!(tally(&p, "/app1", 6, &all), [3, 0, 3]);
}
