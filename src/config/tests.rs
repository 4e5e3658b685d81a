use super::*;

const SEED: &str = include_str!("../../examples/seed.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text)
}

#[test]
fn seed_config_loads() {
    let c = parse(SEED).expect("seed config is valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.upstreams.len(), 3);
    assert_eq!(c.servers.len(), 4, "servers shared by upstreams get one pool each");
    assert_eq!(&*c.listeners[0].name, "public");
    let (route, _) = c.listeners[0].routes.lookup(b"/admin/x").expect("admin route");
    assert_eq!(route.action, RouteAction::Status(403));
    assert_eq!((&*route.labels.listener, &*route.labels.route, &*route.labels.upstream), ("public", "/admin", "-"));
    let (route, _) = c.listeners[0].routes.lookup(b"/app1").expect("app1 route");
    assert_eq!(&*route.labels.upstream, "app1backend");
    assert_eq!(c.upstreams[0].keepalive, 32);
    assert_eq!(c.runtime.driver, Driver::Auto);
    assert_eq!(c.timeouts.upstream_connect, DEFAULT_UPSTREAM_CONNECT_TIMEOUT);
    assert_eq!(c.limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
}

#[test]
fn unknown_upstream_names_line_and_key() {
    let text = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [\n  { prefix = \"/\", upstream = \"nope\" },\n]\n";
    let e = parse(text).expect_err("unknown upstream");
    assert_eq!(e.line.map(|l| l.0), Some(8));
    assert_eq!(e.key.as_deref(), Some("listeners.routes.upstream"));
    assert!(e.to_string().starts_with("test.toml:8:"), "{e}");
    assert!(e.message.contains("nope"));
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nkeepalivee = 3\n";
    let e = parse(text).expect_err("unknown key");
    assert_eq!(e.line.map(|l| l.0), Some(3));
    assert!(e.message.contains("keepalivee"), "{e}");
    assert_eq!(e.key.as_deref(), Some("upstreams.a.keepalivee"));
}

#[test]
fn syntax_error_names_line() {
    let e = parse("[runtime]\nthreads = = 2\n").expect_err("syntax");
    assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    let e = parse("[runtime]\nthreads = \"x\"\n").expect_err("type");
    assert_eq!(e.key.as_deref(), Some("runtime.threads"), "{e}");
}

#[test]
fn values_are_checked() {
    let listener = "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let cases = [
        ("[runtime]\nthreads = 0\n", "runtime.threads"),
        ("[runtime]\ndriver = \"kqueue\"\n", "runtime.driver"),
        ("[runtime]\nring_entries = 1000\n", "runtime.ring_entries"),
        ("[timeouts]\nclient_header = \"soon\"\n", "timeouts.client_header"),
        ("[timeouts]\nupstream_connect = \"0s\"\n", "timeouts.upstream_connect"),
        ("[limits]\nmax_headers = 1000\n", "limits.max_headers"),
        ("[upstreams.a]\nservers = []\n", "upstreams.a.servers"),
        ("[upstreams.a]\nservers = [\"nonsense\"]\n", "upstreams.a.servers"),
        ("[upstreams.a]\nservers = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n", "upstreams.a.servers"),
    ];
    for (text, key) in cases {
        let e = parse(&format!("{text}{listener}")).expect_err(text);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    }
}

#[test]
fn routes_need_exactly_one_action() {
    let base = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    for route in [
        "{ prefix = \"/\" }",
        "{ prefix = \"/\", upstream = \"a\", status = 403 }",
        "{ prefix = \"/\", status = 99 }",
        "{ prefix = \"nope\", upstream = \"a\" }",
    ] {
        let e = parse(&format!("{base}routes = [ {route} ]\n")).expect_err(route);
        assert_eq!(e.line.map(|l| l.0), Some(6), "{e}");
    }
    let dup =
        format!("{base}routes = [ {{ prefix = \"/a\", upstream = \"a\" }}, {{ prefix = \"/A/\", status = 403 }} ]\n");
    assert!(parse(&dup).is_err(), "case-insensitive duplicate prefix");
}

#[test]
fn needs_a_listener() {
    let e = parse("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n").expect_err("no listener");
    assert_eq!(e.key.as_deref(), Some("listeners"));
}

#[test]
fn durations_and_knobs_parse() {
    let text = "[runtime]\nthreads = 3\ndriver = \"epoll\"\nring_entries = 256\ncoop_taskrun = false\nsqpoll_idle = \"5ms\"\npin_cpus = false\n[timeouts]\nclient_header = \"250ms\"\n[limits]\nmax_body_bytes = 10\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let c = parse(text).expect("valid");
    assert_eq!(c.runtime.threads.get(), 3);
    assert_eq!(c.runtime.driver, Driver::Epoll);
    assert_eq!(c.runtime.ring.entries, 256);
    assert!(!c.runtime.ring.coop_taskrun && c.runtime.ring.defer_taskrun);
    assert_eq!(c.runtime.ring.sqpoll_idle, Some(Duration::from_millis(5)));
    assert!(!c.runtime.pin_cpus);
    assert_eq!(c.timeouts.client_header, Duration::from_millis(250));
    assert_eq!(c.limits.max_body_bytes, Some(10));
}
