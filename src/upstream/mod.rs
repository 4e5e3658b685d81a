//! Upstream groups: the servers behind a route, how they are balanced, and
//! the retry and health policy for requests that go through them. An
//! `Upstream` lives in the config snapshot shared by all workers; its only
//! mutable state is atomics (the round-robin ticket, and each server's
//! `ServerState`).

mod balance;
pub mod health;
mod pool;
mod server;

pub use balance::{hash_bytes, next_random, smooth_sequence, Balance, HashKey, HashRing};
pub use pool::UpstreamPools;
pub use server::{now_ms, server_state, PassiveHealth, ServerState};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One backend of an upstream.
#[derive(Debug, Clone)]
pub struct Server {
    /// Stable process-wide index (`ServerState::id`): names the worker's pool.
    pub id: usize,
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    pub weight: u32,
    /// Takes traffic only when no primary server can.
    pub backup: bool,
    /// Most concurrent requests across all workers.
    pub max_conns: Option<usize>,
    /// As written in the config (`host:port` or an address): names the
    /// server on the hash ring, so it keeps its keys across restarts.
    pub name: Arc<str>,
    /// Whether `name` is a host name (re-resolved every `resolve_every`).
    pub is_hostname: bool,
}

/// Active health check settings (`health_check = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a server back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

/// Retry, health and pooling policy of one upstream.
#[derive(Debug, Clone)]
pub struct Policy {
    pub balance: Balance,
    /// Most attempts per request (never more than the servers).
    pub tries: usize,
    /// No new attempt starts after this long.
    pub retry_timeout: Duration,
    /// Retry idempotent requests that timed out (off by default: a hung
    /// backend would otherwise be hit once per server).
    pub retry_on_timeout: bool,
    pub passive: PassiveHealth,
    pub health_check: Option<HealthCheck>,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout: Duration,
    /// How long a request waits when every server is at `max_conns`.
    pub queue_timeout: Duration,
    /// How often host names are resolved again.
    pub resolve_every: Option<Duration>,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    /// Idle connections kept per server per worker.
    pub keepalive: usize,
    pub policy: Policy,
    next: AtomicUsize,
    /// Indices of the servers that are not backups.
    primaries: Vec<usize>,
    /// Smooth weighted round-robin order (weighted mode).
    sequence: Vec<usize>,
    ring: HashRing,
    /// Requests waiting for a server under `max_conns`.
    pub waiting: AtomicUsize,
}

/// Longest candidate list for one request.
pub const MAX_TRIES: usize = 16;

impl Upstream {
    pub fn new(name: Arc<str>, servers: Vec<Server>, keepalive: usize, policy: Policy) -> Self {
        let primaries: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].backup).collect();
        let weights: Vec<u32> = primaries.iter().map(|&i| servers[i].weight).collect();
        let sequence = smooth_sequence(&weights).into_iter().map(|k| primaries[k]).collect();
        let ring = HashRing::new(primaries.iter().map(|&i| (&*servers[i].name, servers[i].weight, i)));
        Upstream {
            name,
            servers,
            keepalive,
            policy,
            next: AtomicUsize::new(0),
            primaries,
            sequence,
            ring,
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn server(&self, addr: SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.addr == addr)
    }

    /// Attempts allowed per request.
    pub fn tries(&self) -> usize {
        self.policy.tries.clamp(1, self.servers.len().min(MAX_TRIES))
    }

    /// Takes the next round-robin ticket. Relaxed: the counter orders
    /// nothing else; each request only needs a distinct ticket.
    fn ticket(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The order in which to try servers for one request: primaries by the
    /// balancing mode, then backups. Health is not looked at here; the
    /// caller claims each server as it reaches it, so a server's single
    /// health probe is only taken by a request that really uses it.
    pub fn plan(&self, key_hash: u64, rng: &mut u64, out: &mut Vec<usize>) {
        out.clear();
        let p = &self.primaries;
        let rotation = |t: usize| (0..p.len()).map(move |k| p[(t + k) % p.len()]);
        match &self.policy.balance {
            Balance::RoundRobin => out.extend(rotation(self.ticket())),
            Balance::WeightedRoundRobin => {
                let t = self.ticket();
                let len = self.sequence.len();
                for k in 0..len {
                    let i = self.sequence[(t + k) % len];
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
            }
            Balance::LeastConn => {
                out.extend(rotation(self.ticket()));
                // Stable sort keeps the rotation among equals.
                out.sort_by(|&a, &b| {
                    let load = |i: usize| {
                        self.servers[i].state.in_flight() as u64 * 1000 / u64::from(self.servers[i].weight.max(1))
                    };
                    load(a).cmp(&load(b))
                });
            }
            Balance::RandomTwo => {
                out.extend(rotation(self.ticket()));
                if out.len() >= 2 {
                    let a = (next_random(rng) % out.len() as u64) as usize;
                    let mut b = (next_random(rng) % (out.len() as u64 - 1)) as usize;
                    if b >= a {
                        b += 1;
                    }
                    let (ia, ib) = (out[a], out[b]);
                    let better =
                        if self.servers[ib].state.in_flight() < self.servers[ia].state.in_flight() { ib } else { ia };
                    if let Some(pos) = out.iter().position(|&i| i == better) {
                        out.swap(0, pos);
                    }
                }
            }
            Balance::Hash(_) => self.ring.walk(key_hash, out, p.len().max(1)),
        }
        out.extend((0..self.servers.len()).filter(|&i| self.servers[i].backup));
        out.truncate(MAX_TRIES.max(self.tries()));
    }
}

impl Server {
    /// Copies the stable id from the shared state.
    pub fn with_id(mut self) -> Self {
        self.id = self.state.id;
        self
    }
}

#[cfg(test)]
mod tests;
