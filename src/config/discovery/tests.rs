use super::super::{Config, ConfigError};
use crate::upstream::{Found, Refresh, Upstream};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const LISTENER: &str =
    "[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [ { prefix = \"/\", upstream = \"a\" } ]\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), &format!("{text}{LISTENER}"))
}

/// `[dns]` pointing at a UDP socket that never answers (kept open by the
/// caller), so every query fails within 100 ms.
fn silent_dns() -> (std::net::UdpSocket, String) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    (s, format!("[dns]\nnameservers = [\"{addr}\"]\ntimeout = \"100ms\"\n"))
}

fn key_and_message(text: &str) -> (Option<String>, String) {
    let e = parse(text).expect_err(text);
    (e.key, e.message)
}

#[test]
fn servers_and_srv_exclude_each_other_and_bounds_go_with_srv() {
    let (key, msg) = key_and_message("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nsrv = \"_http._tcp.x.test\"\n");
    assert_eq!((key.as_deref(), msg.as_str()), (Some("upstreams.a.srv"), "give either `servers` or `srv`, not both"));
    let (key, msg) = key_and_message("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nresolve_min = \"2s\"\n");
    assert_eq!(key.as_deref(), Some("upstreams.a.resolve_min"));
    assert!(msg.starts_with("only with `srv`"), "{msg}");
    let (key, msg) = key_and_message("[upstreams.a]\nsrv = \"_http._tcp.x.test\"\nresolve_every = \"5s\"\n");
    assert_eq!(key.as_deref(), Some("upstreams.a.resolve_every"));
    assert!(msg.starts_with("not with `srv`"), "{msg}");
    let (key, msg) =
        key_and_message("[upstreams.a]\nsrv = \"_http._tcp.x.test\"\nresolve_min = \"10s\"\nresolve_max = \"5s\"\n");
    assert_eq!(key.as_deref(), Some("upstreams.a.resolve_min"));
    assert_eq!(msg, "resolve_min (10s) is more than resolve_max (5s)");
    let (key, msg) = key_and_message("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nresolve_every = \"0s\"\n");
    assert_eq!((key.as_deref(), msg.as_str()), (Some("upstreams.a.resolve_every"), "must be more than 0"));
    let (key, _) = key_and_message("[upstreams.a]\nsrv = \" \"\n");
    assert_eq!(key.as_deref(), Some("upstreams.a.srv"));
}

#[test]
fn the_dns_table_names_its_keys() {
    let base = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n";
    let (key, msg) = key_and_message(&format!("{base}[dns]\nnameservers = [\"ns1.example\"]\n"));
    assert_eq!(key.as_deref(), Some("dns.nameservers"));
    assert_eq!(msg, "expected \"ip:port\" or \"ip\" (port 53), got \"ns1.example\"");
    let (key, _) = key_and_message(&format!("{base}[dns]\nnameservers = []\n"));
    assert_eq!(key.as_deref(), Some("dns.nameservers"));
    let (key, _) = key_and_message(&format!("{base}[dns]\ntimeout = \"soon\"\n"));
    assert_eq!(key.as_deref(), Some("dns.timeout"));
    let (key, msg) = key_and_message(&format!("{base}[dns]\nport = 53\n"));
    assert_eq!(key.as_deref(), Some("dns.port"));
    assert!(msg.starts_with("unknown key `port`"), "{msg}");
    let c = parse(&format!("{base}[dns]\nnameservers = [\"127.0.0.53\", \"[::1]:5353\"]\ntimeout = \"500ms\"\n"))
        .expect("valid");
    let want: Vec<SocketAddr> = vec!["127.0.0.53:53".parse().unwrap(), "[::1]:5353".parse().unwrap()];
    assert_eq!((c.dns.nameservers, c.dns.timeout), (want, Duration::from_millis(500)));
    let c = parse(base).expect("valid");
    assert!(c.dns.nameservers.is_empty(), "/etc/resolv.conf by default");
}

#[test]
fn srv_defaults_to_its_bounds_and_a_name_that_does_not_resolve_is_a_warning() {
    let (_silent, dns) = silent_dns();
    let c =
        parse(&format!("{dns}[upstreams.a]\nsrv = \"_http._tcp.backend.test\"\n")).expect("a warning, not an error");
    let up = &c.upstreams[0];
    assert!(up.servers.is_empty(), "no server until it resolves");
    assert_eq!(
        up.policy.refresh,
        Some(Refresh::Ttl { min: super::DEFAULT_RESOLVE_MIN, max: super::DEFAULT_RESOLVE_MAX })
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.starts_with("upstreams.a.srv: upstream a: cannot resolve SRV name \"_http._tcp.backend.test\""), "{w}");
    assert!(w.ends_with("no server from \"_http._tcp.backend.test\" until it resolves (tried again after 1s)"), "{w}");

    let text =
        format!("{dns}[upstreams.a]\nservers = [\"127.0.0.1:1\", \"backend.test:80\"]\nresolve_every = \"5s\"\n");
    let c = parse(&text).expect("a warning, not an error");
    assert_eq!(c.upstreams[0].servers.len(), 1, "the address, and nothing from the name yet");
    assert!(c.warnings[0].contains("cannot resolve host \"backend.test\""), "{:?}", c.warnings);
    assert!(c.warnings[0].ends_with("(tried again every 5s)"), "{:?}", c.warnings);

    let text = format!("{dns}[upstreams.a]\nservers = [\"backend.test:80\"]\n");
    let e = parse(&text).expect_err("without resolve_every, an error as before");
    assert!(e.message.starts_with("upstream a: cannot resolve host \"backend.test\""), "{e}");
    assert_eq!(e.key.as_deref(), Some("upstreams.a.servers"));
}

#[test]
fn a_reload_keeps_what_a_name_last_resolved_to_when_it_fails_now() {
    let (_silent, dns) = silent_dns();
    let text = format!("{dns}[upstreams.a]\nservers = [\"backend.test:80\"]\nresolve_every = \"5s\"\n{LISTENER}");
    let running = Config::parse(Path::new("test.toml"), &text).expect("valid");
    assert!(running.upstreams[0].servers.is_empty());
    // As if the name had resolved on the resolver thread since.
    let up = &running.upstreams[0];
    let mut sources = up.sources.clone();
    sources[0].found = Some(Found::Addrs(vec!["127.0.0.42:80".parse().unwrap()]));
    let resolved = Upstream::from_sources(up.name.clone(), sources, up.keepalive, up.policy.clone(), up.tls.clone());
    let running = running.with_upstreams(vec![(0, resolved)]);
    assert_eq!(running.servers.len(), 1);

    let reloaded = Config::parse_after(Path::new("test.toml"), &text, Some(&running)).expect("valid");
    let addrs: Vec<String> = reloaded.upstreams[0].servers.iter().map(|s| s.addr.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.42:80"]);
    assert!(reloaded.warnings[0].contains("keeping the 1 server(s) it last resolved to"), "{:?}", reloaded.warnings);
}
