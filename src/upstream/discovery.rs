//! Servers that come from names. Each `servers` entry, and the `srv` name,
//! is a `Source` that keeps what it last resolved to; an upstream's servers
//! are its sources' members, in config order:
//! - an IP address: one server;
//! - a host name: one server per address (A and AAAA), each with the
//!   entry's `weight`, `backup` and `max_conns` (as nginx does);
//! - an SRV name: one server per address of each target, on the record's
//!   port and with the record's weight (1 to `MAX_WEIGHT`); targets of the
//!   lowest priority are primaries, the others backups (nginx's rule for
//!   `service=`).
//!
//! An address that two sources give is listed once, for the first. A
//! server's state (id, health, in-flight count) belongs to its address
//! process-wide (`server_state`), so an address that stays across a new
//! resolution keeps its pools and health, and one that leaves and comes
//! back finds them again. `Upstream::resolve_again` resolves an upstream's
//! names and builds the next upstream when its servers changed; a name
//! that fails keeps its last good resolution.

use super::{member_state, server_state, Policy, Server, Upstream};
use crate::dns::{Lookups, SrvTarget};
use crate::tls::client::UpstreamTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest server weight (the smooth sequence has sum(weights) entries);
/// SRV weights above it count as this.
pub const MAX_WEIGHT: u32 = 1000;

/// How often an upstream's names are resolved again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// `resolve_every`: host names in `servers`, at this period.
    Every(Duration),
    /// `srv`: on the records' TTL, but no sooner than `min` and no later
    /// than `max` (`resolve_min`, `resolve_max`); after a failure, `min`.
    Ttl {
        /// `resolve_min`.
        min: Duration,
        /// `resolve_max`.
        max: Duration,
    },
}

impl Refresh {
    /// When to resolve again after a round that succeeded (`ok`) or not,
    /// whose answers were good for `ttl`.
    pub fn next_in(&self, ok: bool, ttl: Option<Duration>) -> Duration {
        match *self {
            Refresh::Every(d) => d,
            Refresh::Ttl { min, max } if ok => ttl.unwrap_or(min).clamp(min, max),
            Refresh::Ttl { min, .. } => min,
        }
    }
}

/// What a source names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// An IP address: nothing to resolve.
    Addr(SocketAddr),
    /// A host name in `servers`, and the port written with it.
    Host {
        /// The name.
        host: Arc<str>,
        /// The port.
        port: u16,
    },
    /// The `srv` name.
    Srv(Arc<str>),
}

/// A resolution that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The addresses of a host name, sorted.
    Addrs(Vec<SocketAddr>),
    /// The targets of an SRV name.
    Srv(Vec<SrvTarget>),
}

/// A `servers` entry or the `srv` name, with its last good resolution.
#[derive(Debug, Clone)]
pub struct Source {
    /// As written in the config (`"host:port"`, an address, the SRV name).
    pub written: Arc<str>,
    /// What it names.
    pub lookup: Lookup,
    /// The entry's weight (host names and addresses).
    pub weight: u32,
    /// The entry's `backup` (host names and addresses).
    pub backup: bool,
    /// The entry's `max_conns` (host names and addresses).
    pub max_conns: Option<usize>,
    /// The last resolution that succeeded; `None` until one did (a name
    /// that did not resolve at load stands for no server).
    pub found: Option<Found>,
    /// How long `found` was good for when it came (SRV records' TTL).
    pub ttl: Option<Duration>,
}

/// One server a source stands for: what `Server` is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The address.
    pub addr: SocketAddr,
    /// 1 to `MAX_WEIGHT`.
    pub weight: u32,
    /// Takes traffic only when no primary can.
    pub backup: bool,
    /// Most concurrent requests.
    pub max_conns: Option<usize>,
    /// `host:port` as written, or the SRV target's (the TLS name).
    pub name: Arc<str>,
    /// Names it on the hash ring: `name`, or `name@address` when the name
    /// stands for several addresses.
    pub ring_key: Arc<str>,
}

impl Source {
    /// Whether it has a name to resolve (not an IP address).
    pub fn is_name(&self) -> bool {
        !matches!(self.lookup, Lookup::Addr(_))
    }

    /// Resolves it now (blocking): what it found, and for how long that
    /// holds when the answer says (SRV).
    pub fn resolve(&self, lookups: &Lookups) -> Result<(Found, Option<Duration>), String> {
        match &self.lookup {
            Lookup::Addr(a) => Ok((Found::Addrs(vec![*a]), None)),
            Lookup::Host { host, port } => lookups.host(host, *port).map(|a| (Found::Addrs(a), None)),
            Lookup::Srv(name) => lookups.srv(name).map(|a| (Found::Srv(a.targets), Some(a.ttl))),
        }
    }

    /// The servers it stands for now.
    pub fn members(&self) -> Vec<Member> {
        let member = |addr, weight, backup, name: &Arc<str>, several: bool| Member {
            addr,
            weight,
            backup,
            max_conns: self.max_conns,
            name: Arc::clone(name),
            ring_key: if several { format!("{name}@{addr}").into() } else { Arc::clone(name) },
        };
        match (&self.lookup, &self.found) {
            (Lookup::Addr(a), _) => vec![member(*a, self.weight, self.backup, &self.written, false)],
            (_, None) => Vec::new(),
            (_, Some(Found::Addrs(addrs))) => {
                addrs.iter().map(|&a| member(a, self.weight, self.backup, &self.written, addrs.len() > 1)).collect()
            }
            (_, Some(Found::Srv(targets))) => {
                let first = targets.iter().map(|t| t.priority).min();
                let mut out = Vec::new();
                for t in targets {
                    let name: Arc<str> = format!("{}:{}", t.host, t.port).into();
                    let weight = u32::from(t.weight).clamp(1, MAX_WEIGHT);
                    let backup = Some(t.priority) != first;
                    out.extend(t.addrs.iter().map(|&a| member(a, weight, backup, &name, t.addrs.len() > 1)));
                }
                out
            }
        }
    }
}

/// The members of `sources` in order, each address once (the first).
pub fn members_of(sources: &[Source]) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::new();
    for m in sources.iter().flat_map(Source::members) {
        if !out.iter().any(|o| o.addr == m.addr) {
            out.push(m);
        }
    }
    out
}

/// What resolving an upstream's names again gave.
#[derive(Debug)]
pub struct Resolved {
    /// The upstream to put in its place, when its servers changed.
    pub changed: Option<Upstream>,
    /// Names that did not resolve, and why; each keeps its last good
    /// resolution.
    pub failures: Vec<(Arc<str>, String)>,
    /// The shortest time the answers hold (SRV records' TTL).
    pub ttl: Option<Duration>,
}

impl Upstream {
    /// An upstream whose servers are the members of `sources`.
    pub fn from_sources(
        name: Arc<str>,
        sources: Vec<Source>,
        keepalive: usize,
        policy: Policy,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Upstream {
        let servers = members_of(&sources)
            .into_iter()
            .map(|m| {
                let state = server_state(m.addr);
                Server {
                    id: state.id,
                    addr: m.addr,
                    state,
                    member: member_state(&name, m.addr),
                    weight: m.weight,
                    backup: m.backup,
                    max_conns: m.max_conns,
                    name: m.name,
                    ring_key: m.ring_key,
                }
            })
            .collect();
        let mut built = Upstream::new(name, servers, keepalive, policy);
        built.tls = tls;
        built.sources = sources;
        built
    }

    /// Whether its servers come from names resolved again and again
    /// (`resolve_every` with host names, or `srv`).
    pub fn is_discovered(&self) -> bool {
        self.policy.refresh.is_some() && self.sources.iter().any(Source::is_name)
    }

    /// Resolves its names again (blocking: the resolver thread only). A
    /// name that fails keeps what it last resolved to.
    pub fn resolve_again(&self, lookups: &Lookups) -> Resolved {
        let mut sources = self.sources.clone();
        let mut failures = Vec::new();
        let mut ttl: Option<Duration> = None;
        for s in sources.iter_mut().filter(|s| s.is_name()) {
            match s.resolve(lookups) {
                Ok((found, t)) => {
                    s.found = Some(found);
                    s.ttl = t;
                    ttl = match (ttl, t) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(why) => failures.push((Arc::clone(&s.written), why)),
            }
        }
        let changed = (members_of(&sources) != members_of(&self.sources)).then(|| {
            let tls = self.tls.clone();
            let mut next =
                Upstream::from_sources(Arc::clone(&self.name), sources, self.keepalive, self.policy.clone(), tls);
            // Everything that is not about the servers carries over.
            next.send_proxy = self.send_proxy;
            next
        });
        Resolved { changed, failures, ttl }
    }
}

#[cfg(test)]
mod tests;
