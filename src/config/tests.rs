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

/// (line, key) of the error for `text`.
fn line_and_key(text: &str) -> (Option<usize>, Option<String>) {
    let e = parse(text).expect_err(text);
    (e.line.map(|l| l.0), e.key)
}

#[test]
fn broken_table_header_names_that_table() {
    let text = "[timeouts]\nclient_header = \"5s\"\n[limits\nmax_headers = 10\n";
    let e = parse(text).expect_err("unclosed header");
    assert_eq!(e.line, Some((3, 8)), "{e}");
    assert_eq!(e.key.as_deref(), Some("limits"), "not the table above it: {e}");
    assert!(e.to_string().starts_with("test.toml:3:8: key `limits`: invalid table header"), "{e}");
    // Trailing garbage after a good header: that header is still at fault.
    let text = "[timeouts]\nclient_header = \"5s\"\n[limits] junk\nmax_headers = 10\n";
    assert_eq!(line_and_key(text), (Some(3), Some("limits".into())));
    // The table defined twice: its second header.
    let text = "[timeouts]\nclient_header = \"5s\"\n[timeouts]\n";
    assert_eq!(line_and_key(text), (Some(3), Some("timeouts".into())));
}

#[test]
fn broken_array_of_tables_header_names_that_table() {
    let text = "[timeouts]\nclient_header = \"5s\"\n[[listeners\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    assert_eq!(line_and_key(text), (Some(3), Some("listeners".into())));
    let text = "[timeouts]\nclient_header = \"5s\"\n[[listeners]\nname = \"p\"\n";
    assert_eq!(line_and_key(text), (Some(3), Some("listeners".into())));
}

#[test]
fn garbled_header_or_line_without_equals_names_no_key() {
    for text in [
        "[timeouts]\nclient_header = \"5s\"\n[lim its]\nmax_headers = 10\n",
        "[timeouts]\nclient_header = \"5s\"\n[limits.]\n",
        "[timeouts]\nclient_header = \"5s\"\n[]\n",
        "[timeouts]\nclient_header = \"5s\"\nclient_idle\n",
        "[timeouts]\nclient_header = \"5s\"\n  client_idle \"5s\"\n",
        "[timeouts]\nclient_header = \"5s\"\n# a comment\n%\n",
    ] {
        assert_eq!(line_and_key(text).1, None, "{text:?}");
    }
}

#[test]
fn bad_value_in_a_table_names_table_and_key() {
    let head = "[timeouts]\nclient_header = \"5s\"\n[limits]\n";
    for value in ["\"ten\"", "ten", "= 10", "\"ten"] {
        let text = format!("{head}max_headers = {value}\n");
        assert_eq!(line_and_key(&text), (Some(4), Some("limits.max_headers".into())), "{text:?}");
    }
    // An array left open runs to the end of the file, where `toml` notices.
    let text = format!("{head}max_headers = [1, 2\n");
    assert_eq!(line_and_key(&text), (Some(5), Some("limits.max_headers".into())), "{text:?}");
    // Dotted and quoted keys, blanks in a header, a value after a
    // multi-line string that holds what looks like a header.
    let cases = [
        ("[upstreams]\na.servers = [1]\n", "upstreams.a.servers"),
        ("[ upstreams . a ]\nservers = [\"127.0.0.1:1\"]\nkeepalive = \"3\"\n", "upstreams.a.keepalive"),
        ("[upstreams.\"a\"]\nservers = [\"127.0.0.1:1\"]\nkeepalive = =\n", "upstreams.a.keepalive"),
        ("[access_log]\npath = \"\"\"\n[runtime\n\"\"\"\nformat = 3\n", "access_log.format"),
        ("runtime = { threads = \"x\" }\n", "runtime.threads"),
        ("[runtime]\r\nthreads = 2\r\ndriver = 3\r\n", "runtime.driver"),
        ("[runtime]\nthreads = 2 # = 3\ndriver = 3\n", "runtime.driver"),
    ];
    for (text, key) in cases {
        assert_eq!(line_and_key(text).1.as_deref(), Some(key), "{text:?}");
    }
}

#[test]
fn errors_inside_a_multi_line_route_array_name_the_routes() {
    let base = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [\n  { prefix = \"/\", upstream = \"a\" },\n";
    let cases = [
        ("{ prefix = \"/x\" upstream = \"a\" }", "listeners.routes"),
        ("{ prefix = \"/x\", upstream = \"a\"", "listeners.routes"),
        ("{ upstream = \"a\" }", "listeners.routes"),
        ("3", "listeners.routes"),
        ("{ prefix = \"/x\", upstream = a }", "listeners.routes.upstream"),
        ("{ prefix = \"/x\", status = \"x\" }", "listeners.routes.status"),
        ("{ prefix = \"/x\", upstreem = \"a\" }", "listeners.routes.upstreem"),
        ("{ prefix = \"/x\", upstream = \"nope\" }", "listeners.routes.upstream"),
    ];
    for (route, key) in cases {
        let text = format!("{base}  {route},\n]\n");
        assert_eq!(line_and_key(&text), (Some(8), Some(key.into())), "{text:?}");
    }
}

#[test]
fn duplicate_route_prefix_names_both_routes() {
    let base = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let text =
        format!("{base}routes = [ {{ prefix = \"/\", upstream = \"a\" }}, {{ prefix = \"/\", status = 403 }} ]\n");
    let e = parse(&text).expect_err("duplicate /");
    assert_eq!(e.line, Some((6, 57)), "points at the second prefix: {e}");
    assert_eq!(e.key.as_deref(), Some("listeners.routes.prefix"));
    assert_eq!(e.message, "route prefix \"/\" duplicates \"/\" (line 6, column 23)");

    let text = format!(
        "{base}routes = [\n  {{ prefix = \"/app1\", upstream = \"a\" }},\n  {{ prefix = \"/x\", upstream = \"a\" }},\n  {{ prefix = \"/App1/\", status = 403 }},\n]\n"
    );
    let e = parse(&text).expect_err("duplicate /app1");
    assert_eq!(e.line, Some((9, 14)), "{e}");
    assert!(e.message.starts_with("route prefix \"/App1/\" duplicates \"/app1\" (line 7, column 14)"), "{}", e.message);
    assert!(e.message.contains("ignoring case"), "{}", e.message);
    assert!(!e.to_string().contains("Duplicate("), "{e}");

    // The other refusals read as words too.
    let text = format!("{base}routes = [ {{ prefix = \"/a/./b\", upstream = \"a\" }} ]\n");
    let e = parse(&text).expect_err("bad prefix");
    assert_eq!(e.message, "route prefix \"/a/./b\" is not a valid path prefix");
}

#[test]
fn key_at_reads_any_cut_of_a_config_without_panicking() {
    for n in 0..=SEED.len() {
        let _ = parse(&SEED[..n]);
    }
    for offset in 0..=SEED.len() + 1 {
        let _ = error::key_at(SEED, offset);
    }
    assert_eq!(error::key_at(SEED, SEED.find("\"auto\"").expect("in seed")).as_deref(), Some("runtime.driver"));
    assert_eq!(error::key_at(SEED, SEED.find("# threads").expect("in seed")), None, "a comment line");
}

/// The message (without file, line and key) of the error for `text`.
fn message(text: &str) -> String {
    parse(text).expect_err(text).message
}

#[test]
fn type_errors_read_in_toml_words() {
    let listener = "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let cases = [
        ("[runtime]\nthreads = \"lots\"\n", "expected a whole number, got \"lots\""),
        ("[runtime]\nthreads = 1.5\n", "expected a whole number, got 1.5"),
        ("[runtime]\nthreads = true\n", "expected a whole number, got true"),
        ("[runtime]\nthreads = [1]\n", "expected a whole number, got an array"),
        ("[runtime]\nthreads = -1\n", "expected a whole number, 0 or more, got -1"),
        ("[runtime]\nring_entries = 99999999999\n", "expected a whole number from 0 to 4294967295, got 99999999999"),
        ("[limits]\nmax_body_bytes = \"5MB\"\n", "expected a whole number, got \"5MB\""),
        ("[runtime]\npin_cpus = \"yes\"\n", "expected true or false, got \"yes\""),
        ("[runtime]\ndriver = 3\n", "expected a quoted string, got 3"),
        ("[http]\nupgrades = \"websocket\"\n", "expected an array [ ... ], got \"websocket\""),
        ("[runtime]\nthreads = { a = 1 }\n", "expected a whole number, got a table"),
        ("runtime = 3\n", "expected a table, got 3"),
        ("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nhealth_check = \"/h\"\n", "expected a table, got \"/h\""),
        (
            "[upstreams.a]\nkeepalive = 3\n",
            "missing required key `servers` (a list of \"host:port\"), or `srv` (the name of SRV records)",
        ),
    ];
    for (text, expected) in cases {
        let e = parse(&format!("{text}{listener}")).expect_err(text);
        assert_eq!(e.message, expected, "{text:?}");
        assert!(e.key.is_some() && e.line.is_some(), "line and key stay: {e}");
        assert!(!e.message.contains("usize") && !e.message.contains("struct Raw"), "{e}");
    }
    // Numbers out of a narrower range, inside a route.
    let route =
        "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [ { prefix = \"/\", status = 70000 } ]\n";
    let e = parse(route).expect_err("status out of range");
    assert_eq!(e.message, "expected a whole number from 0 to 65535, got 70000");
    assert_eq!((e.line.map(|l| l.0), e.key.as_deref()), (Some(4), Some("listeners.routes.status")));
    let e = parse(&format!("[runtime]\nthreads = \"lots\"\n{listener}")).expect_err("threads");
    assert_eq!(e.to_string(), "test.toml:2:11: key `runtime.threads`: expected a whole number, got \"lots\"");
    assert!(message(&format!("[runtime]\nthreadz = 2\n{listener}")).starts_with("unknown key `threadz`"));
}

#[test]
fn a_server_table_says_what_is_wrong_inside_it() {
    let listener = "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let base = "[upstreams.a]\nservers = [";
    let e = parse(&format!("{base}{{ addr = \"127.0.0.1:1\", weight = \"x\" }}]\n{listener}")).expect_err("weight");
    assert_eq!(e.message, "expected a whole number, got \"x\"");
    assert_eq!(e.key.as_deref(), Some("upstreams.a.servers.weight"));
    let e = parse(&format!("{base}{{ adr = \"127.0.0.1:1\" }}]\n{listener}")).expect_err("adr");
    assert!(e.message.starts_with("unknown key `adr`"), "{e}");
    let e = parse(&format!("{base}3]\n{listener}")).expect_err("a number");
    assert_eq!(e.message, "expected \"host:port\" or a table { addr = \"host:port\", weight = 1 }, got 3");
    assert!(!e.message.contains("untagged"), "{e}");
}

#[test]
fn bad_addresses_name_the_host_and_its_owner() {
    let listener = "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n";
    let e = parse(&format!("[upstreams.a]\nservers = [\"backend.invalid:80\"]\n{listener}")).expect_err("unresolvable");
    assert!(e.message.starts_with("upstream a: cannot resolve host \"backend.invalid\""), "{e}");
    assert!(!e.message.contains("failed to lookup address information"), "{e}");
    assert_eq!((e.line.map(|l| l.0), e.key.as_deref()), (Some(2), Some("upstreams.a.servers")));
    for (server, expected) in [
        ("nonsense", "expected host:port, e.g. \"127.0.0.1:8080\", got \"nonsense\""),
        ("127.0.0.1", "expected host:port, e.g. \"127.0.0.1:8080\", got \"127.0.0.1\""),
        ("127.0.0.1:99999", "port \"99999\" in \"127.0.0.1:99999\" is not a number from 0 to 65535"),
    ] {
        assert_eq!(message(&format!("[upstreams.a]\nservers = [\"{server}\"]\n{listener}")), expected);
    }
    let e = parse("[[listeners]]\nname = \"edge\"\nbind = \"nowhere.invalid:80\"\n").expect_err("listener");
    assert!(e.message.starts_with("listener edge: cannot resolve host \"nowhere.invalid\""), "{e}");
}

/// Two listeners `a` and `b` (and `admin`, when given), one route each.
fn two_listeners(a: &str, b: &str, admin: Option<&str>) -> String {
    let admin = admin.map(|x| format!("[admin]\nbind = \"{x}\"\n")).unwrap_or_default();
    format!(
        "{admin}[[listeners]]\nname = \"a\"\nbind = \"{a}\"\n\n[[listeners]]\nname = \"b\"\nbind = \"{b}\"\nroutes = [ {{ prefix = \"/\", status = 204 }} ]\n"
    )
}

#[test]
fn two_listeners_on_one_address_name_both_and_their_lines() {
    let e = parse(&two_listeners("127.0.0.1:8080", "127.0.0.1:8080", None)).expect_err("duplicate bind");
    assert_eq!(e.line, Some((7, 8)), "points at the second bind: {e}");
    assert_eq!(e.key.as_deref(), Some("listeners.bind"));
    assert!(
        e.message.starts_with("listener \"b\" binds 127.0.0.1:8080, as listener \"a\" does (line 3, column 8)"),
        "{}",
        e.message
    );
}

#[test]
fn overlapping_listener_addresses_are_refused_in_either_order() {
    let overlapping = [
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("127.0.0.1:8080", "0.0.0.0:8080"),
        ("[::]:8080", "[::1]:8080"),
        ("[::]:8080", "0.0.0.0:8080"),
        ("10.1.2.3:8080", "[::]:8080"),
        ("[::ffff:127.0.0.1]:8080", "127.0.0.1:8080"),
    ];
    for (a, b) in overlapping {
        let e = parse(&two_listeners(a, b, None)).expect_err(&format!("{a} and {b} overlap"));
        assert_eq!((e.line, e.key.as_deref()), (Some((7, 8)), Some("listeners.bind")), "{a} {b}: {e}");
        assert!(e.message.contains("listener \"a\"") && e.message.contains("(line 3, column 8)"), "{e}");
        assert!(e.message.contains("overlaps") || a == b, "{e}");
    }
}

#[test]
fn distinct_listener_addresses_and_port_zero_are_accepted() {
    let distinct = [
        ("127.0.0.1:8080", "127.0.0.1:8081"),
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("0.0.0.0:8080", "[::1]:8080"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:0", "127.0.0.1:0"),
    ];
    for (a, b) in distinct {
        parse(&two_listeners(a, b, None)).unwrap_or_else(|e| panic!("{a} and {b} do not overlap: {e}"));
    }
}

#[test]
fn the_admin_address_may_not_overlap_a_listener() {
    for (admin, line) in [("127.0.0.1:8081", 7), ("0.0.0.0:8080", 3), ("[::]:8081", 7)] {
        let e = parse(&two_listeners("127.0.0.1:8080", "127.0.0.1:8081", Some(admin))).expect_err(admin);
        assert_eq!((e.line, e.key.as_deref()), (Some((2, 8)), Some("admin.bind")), "{admin}: {e}");
        assert!(e.message.contains(&format!("(line {}, column 8)", line + 2)), "{admin}: {e}");
    }
    let c = parse(&two_listeners("127.0.0.1:8080", "127.0.0.1:0", Some("127.0.0.1:0"))).expect("port 0 never clashes");
    assert_eq!(c.admin, Some("127.0.0.1:0".parse().expect("addr")));
    parse(&two_listeners("127.0.0.1:8080", "127.0.0.1:8081", Some("127.0.0.2:8080"))).expect("another address");
}

#[test]
fn overlap_is_symmetric_and_ignores_other_ports() {
    let addrs: Vec<std::net::SocketAddr> =
        ["0.0.0.0:1", "127.0.0.1:1", "[::]:1", "[::1]:1", "127.0.0.1:2", "[::ffff:127.0.0.1]:1"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
    for &a in &addrs {
        for &b in &addrs {
            assert_eq!(overlaps(a, b), overlaps(b, a), "{a} {b}");
        }
    }
    assert!(!overlaps(addrs[1], addrs[4]), "another port");
    assert!(!overlaps(addrs[0], addrs[3]), "an IPv4 wildcard takes no IPv6 address");
}

/// `client_subject_header` may not name a field the proxy writes or that
/// frames the request (a second copy would confuse the backend). Checked
/// before any certificate file is read.
#[test]
fn client_subject_header_refuses_framing_and_forwarding_fields() {
    for name in ["Content-Length", "transfer-encoding", "X-Forwarded-For", "Host", "Connection"] {
        let text = format!(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", upstream = \"a\" }} ]\ntls = {{ certificates = [ {{ cert = \"c.pem\", key = \"k.pem\" }} ], client_ca = \"ca.pem\", client_subject_header = \"{name}\" }}\n"
        );
        let e = Config::parse(Path::new("t.toml"), &text).expect_err(name);
        assert_eq!(e.key.as_deref(), Some("listeners.tls.client_subject_header"), "{e}");
    }
}
