//! Upstream groups: the servers behind a route and how one is picked.
//! An `Upstream` is shared by all workers (inside the config snapshot); the
//! only state it carries is the round-robin counter, one atomic increment per
//! pick, so the rotation is exact across workers.

mod pool;
mod server;

pub use pool::{PooledConn, UpstreamPools};
pub use server::{server_state, ServerState};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One backend of an upstream.
#[derive(Debug, Clone)]
pub struct Server {
    /// Stable process-wide index (`ServerState::id`): names the worker's pool.
    pub id: usize,
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    /// Idle connections kept per server per worker.
    pub keepalive: usize,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(name: Arc<str>, members: Vec<Arc<ServerState>>, keepalive: usize) -> Self {
        Upstream {
            name,
            servers: members.into_iter().map(|state| Server { id: state.id, addr: state.addr, state }).collect(),
            keepalive,
            next: AtomicUsize::new(0),
        }
    }

    /// The first server to try for a new request. Later tries walk on from
    /// there (`nth_after`), so one request never tries a server twice.
    pub fn pick(&self) -> usize {
        // Relaxed: the counter orders nothing else; each pick only needs a
        // distinct ticket, and fetch_add hands those out exactly.
        self.next.fetch_add(1, Ordering::Relaxed) % self.servers.len()
    }

    pub fn nth_after(&self, first: usize, n: usize) -> &Server {
        &self.servers[(first + n) % self.servers.len()]
    }

    pub fn server(&self, addr: SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| s.addr == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(n: usize) -> Upstream {
        let members = (0..n).map(|i| server_state(SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16)))).collect();
        Upstream::new("u".into(), members, 4)
    }

    #[test]
    fn rotation_is_exact() {
        let u = up(4);
        let picks: Vec<usize> = (0..9).map(|_| u.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
    }

    #[test]
    fn rotation_is_exact_across_threads() {
        let u = std::sync::Arc::new(up(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let u = u.clone();
                std::thread::spawn(move || {
                    let mut counts = [0usize; 4];
                    for _ in 0..1000 {
                        counts[u.pick()] += 1;
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
        assert_eq!(total, [1000; 4]);
    }

    #[test]
    fn retries_walk_every_server_once() {
        let u = up(3);
        let tried: Vec<u16> = (0..3).map(|n| u.nth_after(2, n).addr.port()).collect();
        assert_eq!(tried, [2002, 2000, 2001]);
    }
}
