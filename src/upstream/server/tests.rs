use super::*;

fn fresh() -> ServerState {
    ServerState::new("127.0.0.1:1".parse().expect("addr"), 0)
}

#[test]
fn one_state_per_address() {
    let a = server_state("127.0.0.1:40001".parse().expect("addr"));
    let b = server_state("127.0.0.1:40002".parse().expect("addr"));
    let a2 = server_state("127.0.0.1:40001".parse().expect("addr"));
    assert!(Arc::ptr_eq(&a, &a2));
    assert_ne!(a.id, b.id);
    a.set_drained(true);
    assert!(a2.is_drained());
}

#[test]
fn max_fails_takes_a_server_out_and_one_probe_decides() {
    let s = fresh();
    let p = PassiveHealth { max_fails: 2, fail_timeout: Duration::from_millis(50) };
    assert!(s.try_acquire(false, None));
    s.release();
    s.record_failure(p);
    assert!(s.is_healthy(), "one failure of two allowed");
    s.record_failure(p);
    assert!(!s.is_healthy());
    assert!(!s.try_acquire(false, None), "down");
    assert!(s.try_acquire(true, None), "fail-open ignores health");
    s.release();
    std::thread::sleep(Duration::from_millis(60));
    assert!(s.try_acquire(false, None), "the probe");
    assert!(!s.try_acquire(false, None), "only one probe at a time");
    s.release();
    s.record_success();
    assert!(s.is_healthy());
    assert!(s.try_acquire(false, None));
    s.release();
}

#[test]
fn a_probe_whose_client_failed_goes_to_the_next_request() {
    let s = fresh();
    let p = PassiveHealth { max_fails: 1, fail_timeout: Duration::from_millis(20) };
    s.record_failure(p);
    std::thread::sleep(Duration::from_millis(30));
    assert!(s.try_acquire(false, None), "the probe");
    s.release();
    s.end_probe_without_verdict();
    assert!(s.try_acquire(false, None), "the next request probes");
    assert!(!s.is_healthy(), "still out until a verdict");
    s.release();
}

#[test]
fn max_conns_caps_in_flight() {
    let s = fresh();
    assert!(s.try_acquire(false, Some(2)));
    assert!(s.try_acquire(false, Some(2)));
    assert!(!s.try_acquire(false, Some(2)));
    assert!(s.is_full(Some(2)));
    s.release();
    assert!(s.try_acquire(false, Some(2)));
    assert_eq!(s.in_flight(), 2);
}

#[test]
fn one_member_state_per_upstream_and_address() {
    let addr = "127.0.0.1:40003".parse().expect("addr");
    let (a, b, a2) = (member_state("m-a", addr), member_state("m-b", addr), member_state("m-a", addr));
    assert!(Arc::ptr_eq(&a, &a2));
    a.set_drained(true);
    assert!(a2.is_drained() && !b.is_drained(), "a drain in one upstream stays there");
    forget_members(|m| *m.upstream == *"m-a" && m.addr == addr);
    assert!(!member_state("m-a", addr).is_drained(), "forgotten with its drain");
    assert!(Arc::ptr_eq(&b, &member_state("m-b", addr)), "the other upstream's member stays");
}

#[test]
fn availability_follows_what_try_acquire_would_do() {
    let s = fresh();
    assert!(s.is_available(Some(1)));
    assert!(s.try_acquire(false, Some(1)));
    assert!(!s.is_available(Some(1)), "at max_conns");
    assert!(s.is_available(None));
    s.release();
    s.set_drained(true);
    assert!(!s.is_available(None));
    s.set_drained(false);
    s.set_active_down(true);
    assert!(!s.is_available(None));
    s.set_active_down(false);
    let p = PassiveHealth { max_fails: 1, fail_timeout: Duration::from_millis(30) };
    s.record_failure(p);
    assert!(!s.is_available(None), "down");
    std::thread::sleep(Duration::from_millis(40));
    assert!(s.is_available(None), "its probe is free");
    assert!(s.try_acquire(false, None));
    assert!(!s.is_available(None), "its probe is taken");
    s.release();
    s.record_success();
    assert!(s.is_available(None));
}

#[test]
fn drained_and_active_down_refuse() {
    let s = fresh();
    s.set_drained(true);
    assert!(!s.try_acquire(true, None));
    s.set_drained(false);
    assert!(s.set_active_down(true));
    assert!(!s.try_acquire(false, None));
    assert!(!s.is_healthy());
    assert!(s.set_active_down(false));
    assert!(s.try_acquire(false, None));
}
