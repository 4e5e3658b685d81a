//! Balancing: the order in which an upstream's servers are tried for one
//! request (`Upstream::plan`). Every mode shares nothing but atomics: the
//! round-robin ticket, and each server's state (availability, and the
//! in-flight count for least_conn and random_two). Each mode has its own
//! file: `round_robin`, `weighted`, `hash`; least_conn and random_two are
//! a few lines on top of the round-robin order, here.

use super::{round_robin, Upstream, MAX_TRIES};

/// How the first server for a request is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// One shared ticket per request: exact rotation across workers.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): weights 5,1,1 give
    /// a,a,b,a,c,a,a (see `weighted`).
    WeightedRoundRobin,
    /// Fewest in-flight requests (per unit of weight) across all workers.
    LeastConn,
    /// Power of two random choices on in-flight requests.
    RandomTwo,
    /// Consistent hashing on a request key.
    Hash(HashKey),
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// A request header (name compared case-insensitively).
    Header(String),
    /// A cookie by name.
    Cookie(String),
}

impl Balance {
    /// The name as written in the config.
    pub fn label(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::WeightedRoundRobin => "weighted_round_robin",
            Balance::LeastConn => "least_conn",
            Balance::RandomTwo => "random_two",
            Balance::Hash(_) => "hash",
        }
    }
}

impl Upstream {
    /// The order in which to try servers for one request: primaries by the
    /// balancing mode, then backups. Every mode but `hash` leads with the
    /// primaries available at this moment (`Server::is_available`), so the
    /// share of a server that is out is spread over the others; the rest
    /// follow, for fail-open and the `max_conns` queue. Nothing is claimed
    /// here: the caller claims each server as it reaches it, so a server's
    /// single health probe is only taken by a request that really uses it.
    /// `out` is reused: no allocation once it has grown to the server count.
    pub fn plan(&self, key_hash: u64, rng: &mut u64, out: &mut Vec<usize>) {
        out.clear();
        let p = &self.primaries;
        let n = p.len();
        if let Balance::Hash(_) = self.policy.balance {
            self.ring.walk(key_hash, out, n.max(1));
        } else {
            let ticket = self.ticket();
            let weighted = self.policy.balance == Balance::WeightedRoundRobin;
            // Usually every server is in: one look at each (stopping at the
            // first that is out) and the plain rotation, no partition.
            let available = if (0..n).all(|k| self.servers[p[k]].is_available()) {
                let lead = if weighted { self.sequence.first_of_all(ticket) } else { ticket % n.max(1) };
                out.extend((lead..n).chain(0..lead).map(|k| p[k]));
                n
            } else {
                let m = round_robin::available_first(n, |k| self.servers[p[k]].is_available(), out);
                if weighted {
                    self.sequence.order(out, m, ticket);
                } else {
                    round_robin::order(out, m, ticket);
                }
                for k in out.iter_mut() {
                    *k = p[*k];
                }
                m
            };
            match self.policy.balance {
                Balance::LeastConn => self.least_conn(&mut out[..available]),
                Balance::RandomTwo => self.random_two(out, available, rng),
                _ => {}
            }
        }
        out.extend((0..self.servers.len()).filter(|&i| self.servers[i].backup));
        // `MAX_TRIES` places, not `tries()`: the caller skips the servers it
        // cannot claim (down, full) and goes on down the list.
        out.truncate(MAX_TRIES);
    }

    /// Fewest in-flight requests per unit of weight first, the rotation
    /// kept among equals. Only the first `MAX_TRIES` places matter, so this
    /// selects them one by one instead of sorting: the counts change while
    /// we look, and the standard sorts may panic on an inconsistent order.
    /// Loads are compared as in_flight/weight by cross-multiplying, which
    /// saves a division per look.
    fn least_conn(&self, live: &mut [usize]) {
        let load = |i: usize| {
            let s = &self.servers[i];
            (s.state.in_flight() as u64, u64::from(s.weight.max(1)))
        };
        for place in 0..live.len().min(MAX_TRIES) {
            let (mut best, mut least) = (place, load(live[place]));
            for (k, &i) in live.iter().enumerate().skip(place + 1) {
                let l = load(i);
                if l.0.saturating_mul(least.1) < least.0.saturating_mul(l.1) {
                    (best, least) = (k, l);
                }
            }
            if best != place {
                // Moves the least loaded forward, keeping the others in order.
                live[place..=best].rotate_right(1);
            }
        }
    }

    /// Two random servers among the available ones (among all when none
    /// is), the one with fewer in-flight requests first.
    fn random_two(&self, out: &mut [usize], available: usize, rng: &mut u64) {
        let pool = match available {
            0 => out.len(),
            1 => return,
            m => m,
        };
        if pool < 2 {
            return;
        }
        let a = (next_random(rng) % pool as u64) as usize;
        let mut b = (next_random(rng) % (pool as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let in_flight = |k: usize| self.servers[out[k]].state.in_flight();
        let better = if in_flight(b) < in_flight(a) { b } else { a };
        out.swap(0, better);
    }
}

/// A small per-worker pseudo-random generator (xorshift64*): random_two
/// needs speed and spread, not cryptographic quality.
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_spread() {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        let mut buckets = [0u32; 4];
        for _ in 0..4000 {
            buckets[(next_random(&mut s) % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (800..1200).contains(&b)), "{buckets:?}");
    }
}
