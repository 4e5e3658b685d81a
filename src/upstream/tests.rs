use super::*;

fn server(port: u16, weight: u32, backup: bool) -> Server {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let state = server_state(addr);
    Server {
        id: state.id,
        addr,
        state,
        member: member_state("u", addr),
        weight,
        backup,
        max_conns: None,
        name: addr.to_string().into(),
        ring_key: addr.to_string().into(),
    }
}

fn policy(balance: Balance) -> Policy {
    Policy {
        balance,
        tries: 3,
        retry_timeout: Duration::from_secs(10),
        retry_on_timeout: false,
        passive: PassiveHealth { max_fails: 1, fail_timeout: Duration::from_secs(10) },
        health_check: None,
        idle_timeout: Duration::from_secs(30),
        queue_timeout: Duration::from_secs(1),
        refresh: None,
    }
}

fn firsts(u: &Upstream, n: usize) -> Vec<u16> {
    let (mut rng, mut out) = (7u64, Vec::new());
    (0..n)
        .map(|_| {
            u.plan(0, &mut rng, &mut out);
            u.servers[out[0]].addr.port()
        })
        .collect()
}

#[test]
fn round_robin_is_exact_and_backups_come_last() {
    let u = Upstream::new(
        "u".into(),
        vec![server(31001, 1, false), server(31002, 1, false), server(31003, 1, true)],
        4,
        policy(Balance::RoundRobin),
    );
    assert_eq!(firsts(&u, 5), [31001, 31002, 31001, 31002, 31001]);
    let mut out = Vec::new();
    u.plan(0, &mut 1, &mut out);
    assert_eq!(out.last().map(|&i| u.servers[i].addr.port()), Some(31003));
    assert_eq!(out.len(), 3);
}

/// How often each of four servers came first over 1,000 plans on each of
/// `threads` threads sharing `u` (and so its ticket counter).
fn first_picks_from_threads(u: &Arc<Upstream>, threads: usize) -> [usize; 4] {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let u = Arc::clone(u);
            std::thread::spawn(move || {
                let mut counts = [0usize; 4];
                let mut out = Vec::new();
                for _ in 0..1000 {
                    u.plan(0, &mut 1, &mut out);
                    counts[out[0]] += 1;
                }
                counts
            })
        })
        .collect();
    let mut total = [0usize; 4];
    for h in handles {
        for (t, c) in total.iter_mut().zip(h.join().expect("thread")) {
            *t += c;
        }
    }
    total
}

#[test]
fn round_robin_is_exact_across_threads() {
    let u = Arc::new(Upstream::new(
        "u".into(),
        (0..4).map(|i| server(31010 + i, 1, false)).collect(),
        4,
        policy(Balance::RoundRobin),
    ));
    let total = first_picks_from_threads(&u, 4);
    assert_eq!(total, [1000; 4]);
}

#[test]
fn weighted_round_robin_is_smooth() {
    let u = Upstream::new(
        "u".into(),
        vec![server(31021, 5, false), server(31022, 1, false), server(31023, 1, false)],
        4,
        policy(Balance::WeightedRoundRobin),
    );
    let names: String = firsts(&u, 14)
        .iter()
        .map(|p| match p {
            31021 => 'a',
            31022 => 'b',
            _ => 'c',
        })
        .collect();
    assert_eq!(names, "aabacaaaabacaa");
}

#[test]
fn least_conn_prefers_the_idlest() {
    let servers = vec![server(31031, 1, false), server(31032, 1, false), server(31033, 1, false)];
    let u = Upstream::new("u".into(), servers, 4, policy(Balance::LeastConn));
    assert!(u.servers[0].state.try_acquire(false, None));
    assert!(u.servers[0].state.try_acquire(false, None));
    assert!(u.servers[2].state.try_acquire(false, None));
    assert_eq!(firsts(&u, 3), [31032, 31032, 31032]);
    u.servers[0].state.release();
    u.servers[0].state.release();
    u.servers[2].state.release();
}

#[test]
fn random_two_spreads_and_avoids_the_loaded() {
    let servers = (0..4).map(|i| server(31040 + i, 1, false)).collect();
    let u = Upstream::new("u".into(), servers, 4, policy(Balance::RandomTwo));
    let picks = firsts(&u, 4000);
    for p in 31040..31044 {
        let share = picks.iter().filter(|&&x| x == p).count() as f64 / 4000.0;
        assert!((0.18..0.32).contains(&share), "{p}: {share}");
    }
    for _ in 0..50 {
        assert!(u.servers[0].state.try_acquire(false, None));
    }
    let share = firsts(&u, 4000).iter().filter(|&&x| x == 31040).count() as f64 / 4000.0;
    assert!(share < 0.05, "a loaded server is rarely first: {share}");
    for _ in 0..50 {
        u.servers[0].state.release();
    }
}

#[test]
fn hash_keeps_a_key_on_one_server() {
    let servers = (0..3).map(|i| server(31050 + i, 1, false)).collect();
    let u = Upstream::new("u".into(), servers, 4, policy(Balance::Hash(HashKey::ClientIp)));
    let (mut out, mut rng) = (Vec::new(), 1);
    let key = hash_bytes(b"10.1.2.3");
    u.plan(key, &mut rng, &mut out);
    let first = out[0];
    for _ in 0..10 {
        u.plan(key, &mut rng, &mut out);
        assert_eq!(out[0], first);
    }
    assert_eq!(out.len(), 3, "fallbacks follow the ring");
}

#[test]
fn tries_never_exceed_servers() {
    let mut p = policy(Balance::RoundRobin);
    p.tries = 10;
    let u = Upstream::new("u".into(), vec![server(31061, 1, false), server(31062, 1, false)], 4, p);
    assert_eq!(u.tries(), 2);
}

/// How many of `n` plans lead with each server (by port), in server order.
fn shares(u: &Upstream, n: usize) -> Vec<usize> {
    let picks = firsts(u, n);
    u.servers.iter().map(|s| picks.iter().filter(|&&p| p == s.addr.port()).count()).collect()
}

/// Three round-robin servers on `base`..`base + 2`, with `out` taking the
/// middle one out and `back` putting it back.
fn one_of_three_out(base: u16, max_conns: Option<usize>, out: impl Fn(&Server), back: impl Fn(&Server)) {
    let mut servers: Vec<Server> = (0..3).map(|i| server(base + i, 1, false)).collect();
    servers[1].max_conns = max_conns;
    let u = Upstream::new("u".into(), servers, 4, policy(Balance::RoundRobin));
    out(&u.servers[1]);
    assert!(!u.servers[1].is_available());
    assert_eq!(shares(&u, 30), [15, 0, 15], "the missing share is spread evenly");
    let mut plan = Vec::new();
    u.plan(0, &mut 1, &mut plan);
    assert_eq!(plan.len(), 3, "an unavailable server stays in the plan, last: {plan:?}");
    assert_eq!(plan[2], 1);
    back(&u.servers[1]);
    assert_eq!(firsts(&u, 6).len(), 6);
    assert_eq!(shares(&u, 30), [10, 10, 10], "all in: the exact rotation again");
}

#[test]
fn round_robin_spreads_a_drained_servers_share_evenly() {
    one_of_three_out(31070, None, |s| s.member.set_drained(true), |s| s.member.set_drained(false));
    one_of_three_out(31073, None, |s| s.state.set_drained(true), |s| s.state.set_drained(false));
}

#[test]
fn round_robin_spreads_a_down_servers_share_evenly() {
    let failed = PassiveHealth { max_fails: 1, fail_timeout: Duration::from_secs(60) };
    one_of_three_out(31076, None, |s| s.state.record_failure(failed), |s| s.state.record_success());
    one_of_three_out(
        31079,
        None,
        |s| {
            s.state.set_active_down(true);
        },
        |s| {
            s.state.set_active_down(false);
        },
    );
}

#[test]
fn round_robin_spreads_a_full_servers_share_evenly() {
    one_of_three_out(31082, Some(1), |s| assert!(s.try_acquire(false)), |s| s.state.release());
}

#[test]
fn weighted_round_robin_spreads_a_missing_share_in_proportion() {
    let servers = vec![server(31091, 1, false), server(31092, 2, false), server(31093, 3, false)];
    let u = Upstream::new("u".into(), servers, 4, policy(Balance::WeightedRoundRobin));
    assert_eq!(shares(&u, 60), [10, 20, 30]);
    u.servers[2].member.set_drained(true);
    assert_eq!(shares(&u, 30), [10, 20, 0], "1:2 without the weight-3 server");
    u.servers[2].member.set_drained(false);
    u.servers[1].member.set_drained(true);
    assert_eq!(shares(&u, 40), [10, 0, 30], "1:3 without the weight-2 server");
    u.servers[1].member.set_drained(false);
}

#[test]
fn round_robin_with_one_out_is_even_across_threads() {
    let u = Arc::new(Upstream::new(
        "u".into(),
        (0..4).map(|i| server(31100 + i, 1, false)).collect(),
        4,
        policy(Balance::RoundRobin),
    ));
    u.servers[0].member.set_drained(true);
    let total = first_picks_from_threads(&u, 3);
    assert_eq!(total, [0, 1000, 1000, 1000]);
}

#[test]
fn least_conn_and_random_two_lead_with_available_servers() {
    for (port, balance) in [(31110, Balance::LeastConn), (31120, Balance::RandomTwo)] {
        let servers = (0..3).map(|i| server(port + i, 1, false)).collect();
        let u = Upstream::new("u".into(), servers, 4, policy(balance));
        u.servers[1].member.set_drained(true);
        let s = shares(&u, 3000);
        assert_eq!(s[1], 0, "{s:?}");
        assert!(s[0] > 1200 && s[2] > 1200, "{s:?}");
    }
}
