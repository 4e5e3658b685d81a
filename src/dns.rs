//! DNS lookups for service discovery: every address of a host name (A and
//! AAAA), and SRV records with the addresses of their targets.
//!
//! Lookups block. They run while a config loads (start, reload, `check`)
//! and on the resolver thread (`runtime::resolver`), never on a worker.
//! Host names go to the system resolver (getaddrinfo: /etc/hosts, then DNS
//! as /etc/resolv.conf says) unless `[dns] nameservers` is set; then, like
//! SRV records, they are asked of those name servers by hickory-resolver.
//! hickory runs on a current-thread tokio runtime made for one round of
//! lookups (`Lookups`) and dropped with it, so tokio never touches a worker
//! and every round reads /etc/resolv.conf afresh, with an empty cache.

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::cell::OnceCell;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long one query waits for an answer (`[dns] timeout`).
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries of one query (each waits up to the timeout) before it fails.
const ATTEMPTS: usize = 2;

/// `[dns]`: where ringway's own DNS queries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `nameservers`; empty: those of /etc/resolv.conf for SRV records, and
    /// the system resolver for host names.
    pub nameservers: Vec<SocketAddr>,
    /// How long one query waits for an answer.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { nameservers: Vec::new(), timeout: DEFAULT_DNS_TIMEOUT }
    }
}

/// One target of an SRV record, with the addresses its name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target's name, without the final dot.
    pub host: String,
    /// The port of the record.
    pub port: u16,
    /// Lower is preferred (RFC 2782).
    pub priority: u16,
    /// Share among the targets of the same priority.
    pub weight: u16,
    /// Every address of `host` on `port`, sorted.
    pub addrs: Vec<SocketAddr>,
}

/// What an SRV lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    /// Sorted by priority, then name and port.
    pub targets: Vec<SrvTarget>,
    /// How long the answer may be trusted: the smallest TTL among the SRV
    /// records and their targets' addresses.
    pub ttl: Duration,
}

/// hickory's resolver and the runtime it runs on.
struct Hickory {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

/// One round of lookups: the hickory resolver is made on first use and
/// shared by the round's lookups.
pub struct Lookups {
    config: DnsConfig,
    hickory: OnceCell<Result<Hickory, String>>,
}

impl Lookups {
    /// A round of lookups that follows `[dns]`.
    pub fn new(config: &DnsConfig) -> Self {
        Lookups { config: config.clone(), hickory: OnceCell::new() }
    }

    /// Every address of `host` on `port` (A and AAAA records, or whatever
    /// the system resolver says), sorted with IPv4 first and without
    /// duplicates. No address at all is an error too.
    pub fn host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let mut addrs = if self.config.nameservers.is_empty() {
            system_lookup(host, port)?
        } else {
            let h = self.hickory()?;
            let found = h.runtime.block_on(h.resolver.lookup_ip(host)).map_err(|e| e.to_string())?;
            found.iter().map(|ip| SocketAddr::new(ip, port)).collect()
        };
        sort_addrs(&mut addrs);
        if addrs.is_empty() {
            return Err("no address".into());
        }
        Ok(addrs)
    }

    /// The targets of the SRV records of `name`, each resolved to its
    /// addresses. Fails when the name has no SRV record, when a target
    /// does not resolve, or when the records say the service is not
    /// offered (a single target ".").
    pub fn srv(&self, name: &str) -> Result<SrvAnswer, String> {
        let h = self.hickory()?;
        let now = Instant::now();
        let found = h.runtime.block_on(h.resolver.srv_lookup(name)).map_err(|e| e.to_string())?;
        let mut valid_until = found.valid_until();
        let mut targets = Vec::new();
        for record in found.answers() {
            let RData::SRV(srv) = &record.data else { continue };
            let host = srv.target.to_string();
            let host = host.strip_suffix('.').unwrap_or(&host);
            if host.is_empty() {
                continue;
            }
            let ips = h
                .runtime
                .block_on(h.resolver.lookup_ip(srv.target.clone()))
                .map_err(|e| format!("target {host}: {e}"))?;
            valid_until = valid_until.min(ips.valid_until());
            let mut addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, srv.port)).collect();
            sort_addrs(&mut addrs);
            if addrs.is_empty() {
                return Err(format!("target {host}: no address"));
            }
            targets.push(SrvTarget {
                host: host.to_owned(),
                port: srv.port,
                priority: srv.priority,
                weight: srv.weight,
                addrs,
            });
        }
        if targets.is_empty() {
            return Err("no SRV target".into());
        }
        targets.sort_by(|a, b| (a.priority, &a.host, a.port).cmp(&(b.priority, &b.host, b.port)));
        targets.dedup_by(|a, b| (a.priority, &a.host, a.port) == (b.priority, &b.host, b.port));
        Ok(SrvAnswer { targets, ttl: valid_until.saturating_duration_since(now) })
    }

    fn hickory(&self) -> Result<&Hickory, String> {
        self.hickory.get_or_init(|| make_hickory(&self.config)).as_ref().map_err(Clone::clone)
    }
}

/// getaddrinfo, through the standard library.
fn system_lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match (host, port).to_socket_addrs() {
        Ok(it) => Ok(it.collect()),
        Err(e) => {
            // The resolver's own reason (no such name, or no DNS at all)
            // without the standard library's preamble.
            let e = e.to_string();
            Err(e.strip_prefix("failed to lookup address information: ").unwrap_or(&e).to_owned())
        }
    }
}

/// IPv4 before IPv6, each in ascending order, no duplicates: the same set
/// always gives the same servers in the same order, whatever order the
/// name server answered in.
fn sort_addrs(addrs: &mut Vec<SocketAddr>) {
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
}

fn make_hickory(config: &DnsConfig) -> Result<Hickory, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the DNS client: {e}"))?;
    let provider = TokioRuntimeProvider::default();
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?
    } else {
        let servers = config.nameservers.iter().map(|a| name_server(a.ip(), a.port())).collect();
        let mut b = TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider);
        // Only the name servers asked for; /etc/hosts is not consulted.
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = config.timeout;
    opts.attempts = ATTEMPTS;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // Each round starts from an empty cache anyway; TTLs are read from
    // the answers, not served from a cache.
    opts.cache_size = 0;
    // A round's resolver must be built inside its runtime (it may spawn).
    let resolver = {
        let _in_runtime = runtime.enter();
        builder.build().map_err(|e| format!("cannot start the DNS client: {e}"))?
    };
    Ok(Hickory { runtime, resolver })
}

/// A name server at `ip:port`, over UDP with TCP for truncated answers.
fn name_server(ip: IpAddr, port: u16) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(ip);
    for c in &mut ns.connections {
        c.port = port;
    }
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sorted_ipv4_first_without_duplicates() {
        let mut v: Vec<SocketAddr> =
            ["[::1]:80", "127.0.0.3:80", "127.0.0.2:80", "127.0.0.3:80"].iter().map(|a| a.parse().unwrap()).collect();
        sort_addrs(&mut v);
        let v: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(v, ["127.0.0.2:80", "127.0.0.3:80", "[::1]:80"]);
    }

    #[test]
    fn the_system_resolver_gives_every_address_of_a_name() {
        let l = Lookups::new(&DnsConfig::default());
        let got = l.host("127.0.0.1", 8080).expect("an address resolves to itself");
        assert_eq!(got, vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
        let e = l.host("nowhere.invalid", 80).expect_err("no such name");
        assert!(!e.contains("failed to lookup"), "{e}");
    }

    #[test]
    fn a_silent_name_server_fails_within_its_timeout() {
        // A bound UDP socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let config =
            DnsConfig { nameservers: vec![silent.local_addr().expect("addr")], timeout: Duration::from_millis(100) };
        let started = Instant::now();
        let l = Lookups::new(&config);
        assert!(l.srv("_http._tcp.example.test").is_err());
        assert!(l.host("example.test", 80).is_err());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
