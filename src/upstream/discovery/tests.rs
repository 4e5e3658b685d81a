use super::*;
use crate::dns::DnsConfig;
use crate::upstream::{Balance, PassiveHealth};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn policy(refresh: Option<Refresh>) -> Policy {
    Policy {
        balance: Balance::RoundRobin,
        tries: 3,
        retry_timeout: Duration::from_secs(10),
        retry_on_timeout: false,
        passive: PassiveHealth { max_fails: 1, fail_timeout: Duration::from_secs(10) },
        health_check: None,
        idle_timeout: Duration::from_secs(30),
        queue_timeout: Duration::from_secs(1),
        refresh,
    }
}

fn host(written: &str, host: &str, port: u16, found: &[&str]) -> Source {
    Source {
        written: written.into(),
        lookup: Lookup::Host { host: host.into(), port },
        weight: 3,
        backup: false,
        max_conns: Some(7),
        found: Some(Found::Addrs(found.iter().map(|a| addr(a)).collect())),
        ttl: None,
    }
}

fn target(host: &str, port: u16, priority: u16, weight: u16, addrs: &[&str]) -> SrvTarget {
    SrvTarget { host: host.into(), port, priority, weight, addrs: addrs.iter().map(|a| addr(a)).collect() }
}

#[test]
fn a_host_name_stands_for_one_server_per_address_with_the_entrys_settings() {
    let s = host("api.internal:8080", "api.internal", 8080, &["10.0.0.1:8080", "10.0.0.2:8080"]);
    let m = s.members();
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|m| m.weight == 3 && !m.backup && m.max_conns == Some(7)));
    assert!(m.iter().all(|m| &*m.name == "api.internal:8080"), "the TLS name stays the host");
    assert_eq!(&*m[0].ring_key, "api.internal:8080@10.0.0.1:8080");
    let one = host("api.internal:8080", "api.internal", 8080, &["10.0.0.1:8080"]);
    assert_eq!(&*one.members()[0].ring_key, "api.internal:8080", "one address keeps the name as written");
    let none = Source { found: None, ..one };
    assert!(none.members().is_empty(), "a name that never resolved stands for no server");
}

#[test]
fn srv_targets_take_their_port_and_weight_and_lower_priorities_are_primaries() {
    let s = Source {
        written: "_http._tcp.svc.test".into(),
        lookup: Lookup::Srv("_http._tcp.svc.test".into()),
        weight: 1,
        backup: false,
        max_conns: None,
        found: Some(Found::Srv(vec![
            target("a.test", 8001, 10, 0, &["127.0.0.1:8001"]),
            target("b.test", 8002, 10, 5000, &["127.0.0.1:8002", "[::1]:8002"]),
            target("c.test", 8003, 20, 2, &["127.0.0.1:8003"]),
        ])),
        ttl: Some(Duration::from_secs(30)),
    };
    let got: Vec<(String, u32, bool, String)> =
        s.members().iter().map(|m| (m.addr.to_string(), m.weight, m.backup, m.name.to_string())).collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1:8001".into(), 1, false, "a.test:8001".into()),
            ("127.0.0.1:8002".into(), MAX_WEIGHT, false, "b.test:8002".into()),
            ("[::1]:8002".into(), MAX_WEIGHT, false, "b.test:8002".into()),
            ("127.0.0.1:8003".into(), 2, true, "c.test:8003".into()),
        ]
    );
}

#[test]
fn unchanged_addresses_keep_their_state_across_resolutions() {
    let before = Upstream::from_sources(
        "disc".into(),
        vec![host("b.internal:80", "b.internal", 80, &["127.7.0.1:80", "127.7.0.2:80"])],
        4,
        policy(Some(Refresh::Every(Duration::from_secs(1)))),
        None,
    );
    let after = Upstream::from_sources(
        "disc".into(),
        vec![
            host("b.internal:80", "b.internal", 80, &["127.7.0.2:80", "127.7.0.3:80"]),
            // Also given by the first source: listed once.
            host("c.internal:80", "c.internal", 80, &["127.7.0.3:80"]),
        ],
        4,
        policy(Some(Refresh::Every(Duration::from_secs(1)))),
        None,
    );
    assert_eq!(after.servers.len(), 2);
    let kept = before.server(addr("127.7.0.2:80")).expect("before");
    let still = after.server(addr("127.7.0.2:80")).expect("after");
    assert_eq!(kept.id, still.id, "the same id, so the same pool in every worker");
    assert!(Arc::ptr_eq(&kept.state, &still.state), "the same health and in-flight count");
    assert!(Arc::ptr_eq(&kept.member, &still.member), "the same drain in this upstream");
    let added = after.server(addr("127.7.0.3:80")).expect("added");
    assert!(before.servers.iter().all(|s| s.id != added.id), "a new address gets a new id");
}

#[test]
fn resolving_again_builds_a_new_upstream_only_when_servers_change_and_keeps_failures() {
    let lookups = Lookups::new(&DnsConfig::default());
    // A numeric host "resolves" through getaddrinfo without any DNS.
    let up = Upstream::from_sources(
        "again".into(),
        vec![
            host("127.7.1.9:80", "127.7.1.9", 80, &["127.7.1.8:80"]),
            host("x", "nowhere.invalid", 80, &["127.7.1.7:80"]),
        ],
        4,
        policy(Some(Refresh::Every(Duration::from_secs(1)))),
        None,
    );
    assert!(up.is_discovered());
    let r = up.resolve_again(&lookups);
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert_eq!(&*r.failures[0].0, "x");
    let next = r.changed.expect("127.7.1.9 replaced 127.7.1.8");
    let addrs: Vec<String> = next.servers.iter().map(|s| s.addr.to_string()).collect();
    assert_eq!(addrs, ["127.7.1.9:80", "127.7.1.7:80"], "the failed name kept its last address");
    let again = next.resolve_again(&lookups);
    assert!(again.changed.is_none(), "nothing changed");
}

#[test]
fn an_upstream_with_no_server_yet_plans_nothing_and_allows_one_try() {
    let up = Upstream::from_sources(
        "empty".into(),
        vec![Source { found: None, ..host("a:80", "a", 80, &[]) }],
        4,
        policy(Some(Refresh::Every(Duration::from_secs(1)))),
        None,
    );
    assert!(up.servers.is_empty());
    assert_eq!(up.tries(), 1);
    let mut out = vec![9];
    up.plan(0, &mut 1, &mut out);
    assert!(out.is_empty());
}

#[test]
fn srv_refresh_follows_the_ttl_within_its_bounds() {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
    let r = Refresh::Ttl { min, max };
    assert_eq!(r.next_in(true, Some(Duration::from_secs(30))), Duration::from_secs(30));
    assert_eq!(r.next_in(true, Some(Duration::ZERO)), min);
    assert_eq!(r.next_in(true, Some(Duration::from_secs(86_400))), max);
    assert_eq!(r.next_in(false, Some(Duration::from_secs(30))), min, "a failure retries soon");
    let every = Refresh::Every(Duration::from_secs(5));
    assert_eq!(every.next_in(false, None), Duration::from_secs(5));
}
