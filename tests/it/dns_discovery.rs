//! DNS discovery against a DNS server the test runs (`support::dns`): a
//! host name stands for one server per address, `resolve_every` follows the
//! records as they change (pools and health kept for the addresses that
//! stay, requests in flight finished on those that leave), SRV records give
//! ports, weights and backups, a silent name server leaves the last servers
//! in place, and `check` warns about names that do not resolve. Distinct
//! backends on one port listen on 127.0.0.2, 127.0.0.3 and 127.0.0.4.

use crate::support::dns::DnsServer;
use crate::support::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Backends `ids[i]` on 127.0.0.(2+i), all on one port; `None` (the test
/// is skipped, saying so) where those addresses cannot be bound.
fn backends_on_one_port(ids: &[&str]) -> Option<(u16, Vec<RecordingBackend>)> {
    let first = RecordingBackend::echo_id_on(SocketAddr::from(([127, 0, 0, 2], 0)), ids[0])?;
    let port = first.addr().port();
    let mut all = vec![first];
    for (i, id) in ids.iter().enumerate().skip(1) {
        let ip = [127, 0, 0, 2 + u8::try_from(i).ok()?];
        all.push(RecordingBackend::echo_id_on(SocketAddr::from((ip, port)), id)?);
    }
    Some((port, all))
}

fn ip(i: usize) -> String {
    format!("127.0.0.{}", 2 + i)
}

/// A proxy with one worker (so one pool), the admin listener, `[dns]`
/// pointing at `dns`, and upstream `named` = `upstream` (its keys) behind
/// listener `public`.
fn proxy(dns: &DnsServer, upstream: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{runtime}
[admin]
bind = "127.0.0.1:0"

{dns}
[upstreams.named]
{upstream}

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "named" }} ]
"#,
        runtime = runtime_config(1, &[], &[]),
        dns = dns.config(),
    ))
}

/// The value of one metric series (`name{labels}`), 0 when absent.
fn series(p: &Proxy, line: &str) -> u64 {
    let text = get(p.admin_addr(), "/metrics").text();
    text.lines().find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// Polls `series` until it reaches `at_least` (up to 10 s); the last value.
fn series_at_least(p: &Proxy, line: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = series(p, line);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Who answered: the first word of an `echo_id` body.
fn who(r: &Response) -> String {
    r.text().split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn a_host_name_with_two_addresses_is_two_servers_in_rotation() {
    let Some((port, b)) = backends_on_one_port(&["a", "b"]) else {
        eprintln!("skipped: cannot bind 127.0.0.2 and 127.0.0.3 on one port");
        return;
    };
    let dns = DnsServer::start();
    dns.set_addrs("backend.test", &[&ip(0), &ip(1)]);
    let p = proxy(&dns, &format!("servers = [\"backend.test:{port}\"]"));
    let answers: Vec<String> = (0..4).map(|_| who(&get(p.addr("public"), "/"))).collect();
    assert_eq!(answers.iter().filter(|w| *w == "a").count(), 2, "{answers:?}");
    assert_eq!(answers.iter().filter(|w| *w == "b").count(), 2, "{answers:?}");
    assert_eq!((b[0].requests().len(), b[1].requests().len()), (2, 2));
    let status = get(p.admin_addr(), "/status").text();
    assert!(status.contains(&format!("127.0.0.2:{port}")) && status.contains(&format!("127.0.0.3:{port}")), "{status}");
}

#[test]
fn changed_records_move_traffic_and_the_address_that_stays_keeps_its_pool() {
    let Some((port, b)) = backends_on_one_port(&["a", "b", "c"]) else {
        eprintln!("skipped: cannot bind 127.0.0.2 to 127.0.0.4 on one port");
        return;
    };
    let dns = DnsServer::start();
    dns.set_addrs("backend.test", &[&ip(0), &ip(1)]);
    let p = proxy(&dns, &format!("servers = [\"backend.test:{port}\"]\nresolve_every = \"200ms\""));
    let mut client = Client::connect(p.addr("public"));
    for _ in 0..4 {
        assert_eq!(client.get("/").status, 200);
    }
    assert_eq!((b[0].requests().len(), b[1].requests().len(), b[2].requests().len()), (2, 2, 0));
    let kept = format!("ringway_upstream_connects_total{{server=\"127.0.0.2:{port}\"}}");
    assert_eq!(series(&p, &kept), 1, "one pooled connection to a");

    // b leaves, c joins.
    dns.set_addrs("backend.test", &[&ip(0), &ip(2)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b[2].requests().is_empty() && Instant::now() < deadline {
        assert_eq!(client.get("/").status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!b[2].requests().is_empty(), "the new address never got traffic");
    let b_before = b[1].requests().len();
    let answers: Vec<String> = (0..6).map(|_| who(&client.get("/"))).collect();
    assert_eq!(answers.iter().filter(|w| *w == "a").count(), 3, "{answers:?}");
    assert_eq!(answers.iter().filter(|w| *w == "c").count(), 3, "{answers:?}");
    assert_eq!(b[1].requests().len(), b_before, "the removed address got traffic");
    b[1].wait_closed(1);
    assert_eq!(series(&p, &kept), 1, "a's pooled connection was reused across the change");
    assert_eq!(b[0].connections_accepted(), 1);
}

#[test]
fn a_removed_address_finishes_its_requests_in_flight() {
    let Some(a) = RecordingBackend::echo_id_on(SocketAddr::from(([127, 0, 0, 2], 0)), "a") else {
        eprintln!("skipped: cannot bind 127.0.0.2");
        return;
    };
    let port = a.addr().port();
    // Set when b starts on /slow (a request is recorded once answered).
    let started = Arc::new(AtomicBool::new(false));
    let on_b = Arc::clone(&started);
    let slow = RecordingBackend::start_on(SocketAddr::from(([127, 0, 0, 3], port)), move |r| {
        if r.target() == "/slow" {
            on_b.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(4));
        }
        ok(&format!("b {}\n", r.target()))
    });
    let Some(slow) = slow else {
        eprintln!("skipped: cannot bind 127.0.0.3:{port}");
        return;
    };
    let dns = DnsServer::start();
    dns.set_addrs("backend.test", &[&ip(0), &ip(1)]);
    let p = proxy(&dns, &format!("servers = [\"backend.test:{port}\"]\nresolve_every = \"100ms\""));
    let mut client = Client::connect(p.addr("public"));
    // Exact rotation: after an answer from a, the next request goes to b.
    while who(&client.get("/")) != "a" {}
    let public = p.addr("public");
    let in_flight = std::thread::spawn(move || get(public, "/slow").text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(started.load(Ordering::SeqCst), "/slow did not reach b");
    dns.set_addrs("backend.test", &[&ip(0)]);
    // b leaves: four answers in a row from a (b would take every other).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut run = 0;
    while run < 4 && Instant::now() < deadline {
        run = if who(&client.get("/")) == "a" { run + 1 } else { 0 };
    }
    assert_eq!(run, 4, "b was not removed");
    assert!(!in_flight.is_finished(), "b left while its request was still running");
    assert_eq!(in_flight.join().expect("request thread"), "b /slow\n");
    // Every connection to b is closed: idle ones when b left, the one of
    // the request in flight after it (not pooled).
    slow.wait_closed(slow.connections_accepted());
}

#[test]
fn srv_records_give_ports_and_weights_and_lower_priorities_are_backups() {
    let (a, b, c) = (RecordingBackend::echo_id("a"), RecordingBackend::echo_id("b"), RecordingBackend::echo_id("c"));
    let dns = DnsServer::start();
    for name in ["a.test", "b.test", "c.test"] {
        dns.set_addrs(name, &["127.0.0.1"]);
    }
    let (pa, pb, pc) = (a.addr().port(), b.addr().port(), c.addr().port());
    dns.set_srv("_http._tcp.svc.test", &[(10, 3, pa, "a.test"), (10, 1, pb, "b.test"), (20, 5, pc, "c.test")]);
    let p = proxy(&dns, "srv = \"_http._tcp.svc.test\"\nbalance = \"weighted_round_robin\"");
    let answers: Vec<String> = (0..8).map(|_| who(&get(p.addr("public"), "/"))).collect();
    assert_eq!(answers.iter().filter(|w| *w == "a").count(), 6, "{answers:?}");
    assert_eq!(answers.iter().filter(|w| *w == "b").count(), 2, "{answers:?}");
    assert!(c.requests().is_empty(), "the priority-20 target is a backup");

    // The TTL (1 s) brings the next answer: a gone, b alone with c behind.
    dns.set_srv("_http._tcp.svc.test", &[(10, 1, pb, "b.test"), (20, 5, pc, "c.test")]);
    assert!(series_at_least(&p, "ringway_dns_resolutions_total{upstream=\"named\",result=\"success\"}", 2) >= 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let a_before = a.requests().len();
    let mut last = String::new();
    while Instant::now() < deadline {
        last = who(&get(p.addr("public"), "/"));
        if last == "b" && who(&get(p.addr("public"), "/")) == "b" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, "b", "a was not removed");
    let before = a.requests().len();
    for _ in 0..3 {
        assert_eq!(who(&get(p.addr("public"), "/")), "b");
    }
    assert_eq!(a.requests().len(), before, "a left (it had {a_before} before)");
}

#[test]
fn a_silent_name_server_keeps_the_last_servers_and_counts_failures() {
    let Some((port, b)) = backends_on_one_port(&["a", "b"]) else {
        eprintln!("skipped: cannot bind 127.0.0.2 and 127.0.0.3 on one port");
        return;
    };
    let dns = DnsServer::start();
    dns.set_addrs("backend.test", &[&ip(0), &ip(1)]);
    let p = proxy(&dns, &format!("servers = [\"backend.test:{port}\"]\nresolve_every = \"200ms\""));
    let ok = "ringway_dns_resolutions_total{upstream=\"named\",result=\"success\"}";
    let failed = "ringway_dns_resolutions_total{upstream=\"named\",result=\"failure\"}";
    assert!(series_at_least(&p, ok, 1) >= 1, "no round of resolution");
    dns.set_silent(true);
    assert!(series_at_least(&p, failed, 2) >= 2, "failures were not counted");
    let answers: Vec<String> = (0..4).map(|_| who(&get(p.addr("public"), "/"))).collect();
    assert_eq!(answers.iter().filter(|w| *w == "a").count(), 2, "{answers:?}");
    assert_eq!(answers.iter().filter(|w| *w == "b").count(), 2, "{answers:?}");
    assert!(p.wait_stderr("cannot resolve backend.test", Duration::from_secs(5)), "{}", p.stderr());
    // Back: successes count again.
    let before = series(&p, ok);
    dns.set_silent(false);
    assert!(series_at_least(&p, ok, before + 1) > before);
    assert_eq!((b[0].requests().len(), b[1].requests().len()), (2, 2));
}

#[test]
fn a_name_that_does_not_resolve_at_start_answers_503_until_it_does() {
    let Some((port, b)) = backends_on_one_port(&["a"]) else {
        eprintln!("skipped: cannot bind 127.0.0.2");
        return;
    };
    let dns = DnsServer::start();
    let p = proxy(&dns, &format!("servers = [\"later.test:{port}\"]\nresolve_every = \"200ms\""));
    assert!(p.wait_stderr("cannot resolve host \"later.test\"", Duration::from_secs(5)), "{}", p.stderr());
    assert_eq!(get(p.addr("public"), "/").status, 503);
    dns.set_addrs("later.test", &[&ip(0)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    while Instant::now() < deadline && status != 200 {
        std::thread::sleep(Duration::from_millis(50));
        status = get(p.addr("public"), "/").status;
    }
    assert_eq!(status, 200, "the name was not tried again");
    assert_eq!(b[0].requests().len(), 1);
}

#[test]
fn check_warns_about_names_that_do_not_resolve_when_they_are_resolved_again() {
    let dns = DnsServer::start();
    let text = |resolve: &str| {
        format!(
            "{dns}[upstreams.a]\nservers = [\"gone.test:80\"]\n{resolve}\n[upstreams.b]\nsrv = \"_http._tcp.gone.test\"\n\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n",
            dns = dns.config()
        )
    };
    let check = |toml: &str| {
        let path = unique_temp_path("dns-check", ".toml");
        std::fs::write(&path, toml).expect("write config");
        let out = std::process::Command::new(bin()).args(["check", "--config"]).arg(&path).output().expect("run check");
        let _ = std::fs::remove_file(&path);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, stderr) = check(&text("resolve_every = \"5s\""));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning: upstreams.a.servers: upstream a: cannot resolve host \"gone.test\""), "{stderr}");
    assert!(stderr.contains("warning: upstreams.b.srv: upstream b: cannot resolve SRV name \"_http._tcp.gone.test\""));
    let (code, stderr) = check(&text(""));
    assert_eq!(code, Some(1), "without resolve_every it is an error: {stderr}");
    assert!(stderr.contains("key `upstreams.a.servers`: upstream a: cannot resolve host \"gone.test\""), "{stderr}");
}
