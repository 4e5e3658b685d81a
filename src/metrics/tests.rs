use super::*;

fn labels(route: &str) -> Arc<RouteLabels> {
    Arc::new(RouteLabels { listener: "public".into(), route: route.into(), upstream: "all".into() })
}

#[test]
fn counters_merge_across_workers() {
    let l = labels("/");
    let mut a = WorkerMetrics::default();
    let mut b = WorkerMetrics::default();
    a.request(&l, 200, 150);
    a.request(&l, 200, 90_000);
    b.request(&l, 200, 300);
    b.request(&labels("/app1"), 404, 10);
    b.retry();
    let up: Arc<str> = "all".into();
    let addr = "127.0.0.1:1".parse().expect("addr");
    a.upstream(&up, 0, addr, Outcome::Success);
    b.upstream(&up, 0, addr, Outcome::Success);
    a.connect(0, addr);
    let health = [(up.clone(), addr, true)];
    let text = render(
        &[a.snapshot(vec![]), b.snapshot(vec![PoolGauge { addr, idle: 2, active: 0 }])],
        &Globals { reloads_ok: 1, reloads_failed: 0, health: &health, dns: &[] },
    );
    assert!(
        text.contains("ringway_requests_total{listener=\"public\",route=\"/\",upstream=\"all\",code=\"200\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("route=\"/app1\",upstream=\"all\",code=\"404\"} 1\n"));
    assert!(text.contains("ringway_request_duration_seconds_count 4\n"));
    assert!(text.contains("ringway_request_duration_seconds_bucket{le=\"0.0005\"} 3\n"), "{text}");
    assert!(text.contains("ringway_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert!(text
        .contains("ringway_upstream_requests_total{upstream=\"all\",server=\"127.0.0.1:1\",outcome=\"success\"} 2\n"));
    assert!(text.contains("ringway_upstream_connects_total{server=\"127.0.0.1:1\"} 1\n"));
    assert!(text.contains("state=\"idle\"} 2\n"));
    assert!(text.contains("ringway_retries_total 1\n"));
    assert!(text.contains("ringway_config_reloads_total{result=\"success\"} 1\n"));
    assert!(text.contains("ringway_upstream_health{upstream=\"all\",server=\"127.0.0.1:1\"} 1\n"));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
}
