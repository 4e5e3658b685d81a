//! Balancing with servers out (issue 12): the share of a server that is
//! drained, down (passive or active health) or at `max_conns` is spread
//! over the others evenly (round robin) or in proportion to their weights
//! (weighted round robin), not handed to the server after it. Each test
//! runs the real binary against real loopback backends and counts which
//! backend answered.

use crate::support::faults::{Fault, FaultBackend, Idle};
use crate::support::*;

/// `"addr", "addr", ...`.
fn addrs(backends: &[&FaultBackend]) -> String {
    backends.iter().map(|b| format!("\"{}\"", b.addr())).collect::<Vec<_>>().join(", ")
}

fn admin_post(p: &Proxy, path: &str) {
    let head = format!("POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    let r = request(p.admin_addr(), head.as_bytes());
    assert_eq!(r.status, 200, "{path}: {}", r.text());
}

/// `n` GETs in a row on one keep-alive connection: how many each of
/// `backends` answered (each answer must be a 200 from one of them).
fn tally(p: &Proxy, n: usize, tag: &str, backends: &[&FaultBackend]) -> Vec<usize> {
    let mut c = Client::connect(p.addr("public"));
    let mut counts = vec![0; backends.len()];
    for i in 0..n {
        let path = format!("/{tag}{i}");
        let r = c.get(&path);
        assert_eq!(r.status, 200, "{path}: {}{}", r.raw_head, r.text());
        let text = r.text();
        let who = backends
            .iter()
            .position(|b| text == format!("{} {path}\n", b.name()))
            .unwrap_or_else(|| panic!("{path}: body {text:?} is from none of the backends"));
        counts[who] += 1;
    }
    counts
}

/// Asserts `got` is `want`, each within one.
fn assert_close(got: &[usize], want: &[usize], what: &str) {
    let close = got.iter().zip(want).all(|(&g, &w)| g.abs_diff(w) <= 1);
    assert!(close, "{what}: got {got:?}, want {want:?} (each within 1)");
}

#[test]
fn round_robin_spreads_a_drained_servers_share_evenly() {
    let bs = [FaultBackend::start("a"), FaultBackend::start("b"), FaultBackend::start("c")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let p = start_proxy(2, &[], &addrs(&all), "");
    let b = bs[1].addr();
    admin_post(&p, &format!("/upstreams/x/servers/{b}/drain"));
    // Skipping b in the rotation a,b,c would give c 20 and a 10.
    assert_close(&tally(&p, 30, "member", &all), &[15, 0, 15], "b drained in x");
    admin_post(&p, &format!("/upstreams/x/servers/{b}/enable"));
    admin_post(&p, &format!("/servers/{b}/drain"));
    assert_close(&tally(&p, 30, "address", &all), &[15, 0, 15], "b drained everywhere");
    admin_post(&p, &format!("/servers/{b}/enable"));
    assert_eq!(tally(&p, 30, "back", &all), [10, 10, 10], "all in: the exact rotation");
}

#[test]
fn round_robin_spreads_a_passively_failed_servers_share_evenly() {
    let bs = [FaultBackend::start("a"), FaultBackend::start("b"), FaultBackend::start("c")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let p = start_proxy(2, &[], &addrs(&all), "max_fails = 1\nfail_timeout = \"60s\"");
    bs[1].set(Fault::ResetBeforeAnswer);
    // Until b has failed once (the GET is then retried on another server).
    let mut c = Client::connect(p.addr("public"));
    for i in 0..3 {
        if bs[1].request_count() > 0 {
            break;
        }
        assert_eq!(c.get(&format!("/warm{i}")).status, 200);
    }
    assert_eq!(bs[1].request_count(), 1, "b was never tried");
    assert_close(&tally(&p, 30, "down", &all), &[15, 0, 15], "b down after a failure");
}

#[test]
fn round_robin_spreads_an_actively_failed_servers_share_evenly() {
    let a = FaultBackend::start("a");
    let b = FaultBackend::start_with("b", Fault::Hang, Idle::Keep);
    let c = FaultBackend::start("c");
    let all = [&a, &b, &c];
    let p = start_proxy(
        2,
        &[],
        &addrs(&all),
        r#"health_check = { path = "/health", interval = "100ms", timeout = "200ms", rise = 1, fall = 1 }"#,
    );
    // b hangs its checks too: once it has seen a second one, the verdict on
    // the first (down) has been applied.
    assert!(b.wait_until(|r, _, _| r.iter().filter(|x| x.health_check).count() >= 2), "b saw too few checks");
    assert_close(&tally(&p, 30, "checked", &all), &[15, 0, 15], "b failing its health checks");
}

#[test]
fn round_robin_spreads_a_full_servers_share_evenly() {
    let a = FaultBackend::start_with("a", Fault::Hang, Idle::Keep);
    let b = FaultBackend::start("b");
    let c = FaultBackend::start("c");
    let all = [&a, &b, &c];
    let servers = format!("{{ addr = \"{}\", max_conns = 1 }}, \"{}\", \"{}\"", a.addr(), b.addr(), c.addr());
    let p = start_proxy(2, &[], &servers, "");
    // The first ticket goes to a, which holds the request: a is at max_conns.
    let public = p.addr("public");
    let hold = std::thread::spawn(move || get(public, "/hold").status);
    assert!(a.wait_until(|r, _, _| !r.is_empty()), "a never got the request that fills it");
    assert_close(&tally(&p, 30, "full", &all), &[0, 15, 15], "a at max_conns");
    assert_eq!(a.request_count(), 1, "a took requests beyond max_conns");
    // Let the held request end (the GET is retried on b or c).
    a.kill();
    let status = hold.join().expect("holding client");
    assert!(matches!(status, 200 | 502 | 504), "held request: {status}");
}

#[test]
fn weighted_round_robin_spreads_a_drained_servers_share_in_proportion() {
    let bs = [FaultBackend::start("a"), FaultBackend::start("b"), FaultBackend::start("c")];
    let all = [&bs[0], &bs[1], &bs[2]];
    let servers = format!(
        "{{ addr = \"{}\", weight = 1 }}, {{ addr = \"{}\", weight = 2 }}, {{ addr = \"{}\", weight = 3 }}",
        bs[0].addr(),
        bs[1].addr(),
        bs[2].addr()
    );
    let p = start_proxy(2, &[], &servers, r#"balance = "weighted_round_robin""#);
    assert_eq!(tally(&p, 30, "all", &all), [5, 10, 15], "weights 1,2,3");
    admin_post(&p, &format!("/upstreams/x/servers/{}/drain", bs[2].addr()));
    // The sequence is c,b,a,c,b,c. Skipping c's entries (taking the next
    // one) gave b 25 of 30 and a 5; in proportion to 1:2 it is 10:20.
    assert_close(&tally(&p, 30, "drained", &all), &[10, 20, 0], "c (weight 3) drained");
    admin_post(&p, &format!("/upstreams/x/servers/{}/enable", bs[2].addr()));
    admin_post(&p, &format!("/upstreams/x/servers/{}/drain", bs[1].addr()));
    assert_close(&tally(&p, 40, "drained-b", &all), &[10, 0, 30], "b (weight 2) drained");
}
