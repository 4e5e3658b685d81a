//! Upstream groups: the servers behind a route, how they are balanced, and
//! the retry and health policy for requests that go through them. An
//! `Upstream` lives in the config snapshot shared by all workers; its only
//! mutable state is atomics (the round-robin ticket, each server's
//! `ServerState`, and each member's `MemberState`).

mod balance;
mod discovery;
mod hash;
pub mod health;
mod padded;
mod pool;
mod round_robin;
mod server;
mod stable_hash;
mod weighted;

pub use balance::{next_random, Balance, HashKey};
pub use discovery::{members_of, Found, Lookup, Member, Refresh, Resolved, Source, MAX_WEIGHT};
pub use pool::{PoolKey, UpstreamPools};
pub use server::{member_state, server_state, MemberState, PassiveHealth, ServerState};
pub use stable_hash::hash_bytes;

use hash::HashRing;
use padded::CachePadded;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weighted::SmoothSequence;

/// One backend of an upstream.
#[derive(Debug, Clone)]
pub struct Server {
    /// Stable process-wide index (`ServerState::id`): names the worker's pool.
    pub id: usize,
    /// The address connected to (an address a name resolved to, for a
    /// server given by name: see `discovery`).
    pub addr: SocketAddr,
    /// What belongs to the address in every upstream: health, in-flight
    /// requests, the drain of the address everywhere.
    pub state: Arc<ServerState>,
    /// What belongs to this server in this upstream: its drain here.
    pub member: Arc<MemberState>,
    /// Share of traffic relative to the others (1 to 1000).
    pub weight: u32,
    /// Takes traffic only when no primary server can.
    pub backup: bool,
    /// Most concurrent requests across all workers.
    pub max_conns: Option<usize>,
    /// As written in the config (`host:port` or an address), or an SRV
    /// target's `host:port`: the name TLS verifies.
    pub name: Arc<str>,
    /// Names the server on the hash ring, so it keeps its keys across
    /// restarts: `name`, or `name@address` when the name stands for several
    /// addresses.
    pub ring_key: Arc<str>,
}

/// Active health check settings (`health_check = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested with `GET`; a 2xx or 3xx status passes. Absent: a
    /// connect check (the TCP connect, and the TLS handshake on a TLS
    /// upstream, is the whole check), for servers that do not speak HTTP.
    pub path: Option<String>,
    /// Time between two checks of a server.
    pub interval: Duration,
    /// How long one check may take before it fails.
    pub timeout: Duration,
    /// Consecutive passes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

/// Retry, health and pooling policy of one upstream.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How the first server for a request is chosen.
    pub balance: Balance,
    /// Most attempts per request (never more than the servers).
    pub tries: usize,
    /// No new attempt starts after this long.
    pub retry_timeout: Duration,
    /// Retry idempotent requests that timed out (off by default: a hung
    /// backend would otherwise be hit once per server).
    pub retry_on_timeout: bool,
    /// When failures take a server out.
    pub passive: PassiveHealth,
    /// Active checks; off when `None`.
    pub health_check: Option<HealthCheck>,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout: Duration,
    /// How long a request waits when every server is at `max_conns`.
    pub queue_timeout: Duration,
    /// How often its names are resolved again (`resolve_every`, or the
    /// TTL of `srv` records); `None`: resolved once, at load.
    pub refresh: Option<Refresh>,
}

/// An `[upstreams.NAME]`: its servers, their balancing order and its policy.
#[derive(Debug)]
pub struct Upstream {
    /// The NAME of `[upstreams.NAME]`.
    pub name: Arc<str>,
    /// In config order; plans and routes name them by index. Empty while
    /// no name of a discovered upstream has resolved (requests get 503).
    pub servers: Vec<Server>,
    /// What `servers` came from: the `servers` entries or the `srv` name,
    /// each with its last resolution (empty for an upstream built from
    /// servers directly).
    pub sources: Vec<Source>,
    /// Idle connections kept per server per worker.
    pub keepalive: usize,
    /// Retries, health and pooling.
    pub policy: Policy,
    /// The round-robin ticket: written by every request through this
    /// upstream on every worker, so on a cache line of its own, apart from
    /// the fields those requests read.
    next: CachePadded<AtomicUsize>,
    /// Indices of the servers that are not backups, ascending.
    primaries: Vec<usize>,
    /// Smooth weighted round-robin order over the primaries (weighted mode).
    sequence: SmoothSequence,
    ring: HashRing,
    /// Requests waiting for a server under `max_conns`.
    pub waiting: AtomicUsize,
    /// Speak TLS to the servers (the upstream's `tls` table).
    pub tls: Option<Arc<crate::tls::client::UpstreamTls>>,
    /// Send a PROXY protocol header first on each new connection
    /// (`send_proxy_protocol`); pooled connections then serve one client each.
    pub send_proxy: Option<crate::proxy_protocol::Version>,
}

/// Longest candidate list for one request.
pub const MAX_TRIES: usize = 16;

impl Upstream {
    /// Builds the balancing structures (primaries, weighted sequence, hash
    /// ring) once, for the life of the config snapshot.
    pub fn new(name: Arc<str>, servers: Vec<Server>, keepalive: usize, policy: Policy) -> Self {
        let primaries: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].backup).collect();
        let weights: Vec<u32> = primaries.iter().map(|&i| servers[i].weight).collect();
        let sequence = SmoothSequence::new(&weights);
        let ring = HashRing::new(primaries.iter().map(|&i| (&*servers[i].ring_key, servers[i].weight, i)));
        Upstream {
            name,
            servers,
            sources: Vec::new(),
            keepalive,
            policy,
            next: CachePadded(AtomicUsize::new(0)),
            primaries,
            sequence,
            ring,
            waiting: AtomicUsize::new(0),
            tls: None,
            send_proxy: None,
        }
    }

    /// The server at `addr`, if this upstream lists it.
    pub fn server(&self, addr: SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.addr == addr)
    }

    /// Attempts allowed per request (at least 1, even with no server).
    pub fn tries(&self) -> usize {
        self.policy.tries.min(self.servers.len().min(MAX_TRIES)).max(1)
    }

    /// Takes the next round-robin ticket. Relaxed: the counter orders
    /// nothing else; each request only needs a distinct ticket.
    fn ticket(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

impl Server {
    /// Drained in this upstream, or everywhere.
    pub fn is_drained(&self) -> bool {
        self.member.is_drained() || self.state.is_drained()
    }

    /// In rotation in this upstream: not drained, not down (`/status`,
    /// `ringway_upstream_health`).
    pub fn in_rotation(&self) -> bool {
        !self.member.is_drained() && self.state.is_healthy()
    }

    /// Whether `try_acquire` would take it now, for the balancer's order.
    pub fn is_available(&self) -> bool {
        !self.member.is_drained() && self.state.is_available(self.max_conns)
    }

    /// Claims a request slot (see `ServerState::try_acquire`); a server
    /// drained in this upstream is never taken, not even fail-open.
    pub fn try_acquire(&self, ignore_health: bool) -> bool {
        !self.member.is_drained() && self.state.try_acquire(ignore_health, self.max_conns)
    }

    /// Whether it is at `max_conns`.
    pub fn is_full(&self) -> bool {
        self.state.is_full(self.max_conns)
    }
}

/// Called once a new snapshot is in place (reload, names resolved to other
/// servers): drains of servers it no longer lists are forgotten, so a server
/// added back later starts in rotation. A drain in one upstream ends when
/// that upstream no longer lists the address; a drain everywhere, and the
/// address's health, end when no upstream does.
pub fn forget_drains_outside(upstreams: &[Arc<Upstream>]) {
    let listed = |upstream: Option<&str>, addr: SocketAddr| {
        upstreams.iter().any(|u| upstream.is_none_or(|name| *u.name == *name) && u.server(addr).is_some())
    };
    server::forget_members(|m| !listed(Some(&m.upstream), m.addr));
    server::forget_address_state(|addr| !listed(None, addr));
}

#[cfg(test)]
mod tests;
