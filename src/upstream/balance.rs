//! Balancing: the order in which an upstream's servers are tried for one
//! request. Every mode shares nothing but atomics: the round-robin ticket,
//! and each server's in-flight count (for least_conn and random_two).

use std::hash::{Hash, Hasher};

/// How the first server for a request is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Smooth weighted round robin (nginx's): weights 5,1,1 give
    /// a,a,b,a,c,a,a. The sequence is computed once per config, so workers
    /// share it through the round-robin ticket alone.
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
    ClientIp,
    /// A request header (name compared case-insensitively).
    Header(String),
    /// A cookie by name.
    Cookie(String),
}

impl Balance {
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

/// The smooth weighted round-robin sequence for `weights` (length = sum).
pub fn smooth_sequence(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best);
    }
    seq
}

/// Points per unit of weight on the hash ring: enough that keys spread
/// within a few percent of the weights.
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// A consistent-hash ring: removing one of N servers moves only the keys
/// that hashed to it (about 1/N).
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    points: Vec<(u64, usize)>,
}

pub fn hash_bytes(bytes: &[u8]) -> u64 {
    // SipHash with fixed keys: stable across processes and restarts, so a
    // key keeps its server after a restart too.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl HashRing {
    /// `members`: (stable name, weight, index in the upstream).
    pub fn new<'a>(members: impl Iterator<Item = (&'a str, u32, usize)>) -> Self {
        let mut points = Vec::new();
        for (name, weight, index) in members {
            for k in 0..weight.saturating_mul(RING_POINTS_PER_WEIGHT) {
                points.push((hash_bytes(format!("{name}#{k}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// Server indices in ring order from `hash`, each once, at most `max`.
    pub fn walk(&self, hash: u64, out: &mut Vec<usize>, max: usize) {
        if self.points.is_empty() {
            return;
        }
        let start = self.points.partition_point(|&(h, _)| h < hash);
        for k in 0..self.points.len() {
            let (_, idx) = self.points[(start + k) % self.points.len()];
            if !out.contains(&idx) {
                out.push(idx);
                if out.len() >= max {
                    return;
                }
            }
        }
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
    fn smooth_weighted_sequence_matches_nginx() {
        let names = ["a", "b", "c"];
        let seq: String = smooth_sequence(&[5, 1, 1]).iter().map(|&i| names[i]).collect();
        assert_eq!(seq, "aabacaa");
        assert_eq!(smooth_sequence(&[1, 1, 1]), [0, 1, 2]);
        let seq = smooth_sequence(&[3, 2]);
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(seq, [0, 1, 0, 1, 0]);
    }

    #[test]
    fn ring_moves_about_one_nth_of_keys() {
        let names: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let full = HashRing::new(names.iter().enumerate().map(|(i, n)| (n.as_str(), 1, i)));
        let without = HashRing::new(names.iter().enumerate().filter(|(i, _)| *i != 2).map(|(i, n)| (n.as_str(), 1, i)));
        let (mut moved, mut counts) = (0, [0usize; 5]);
        let keys = 20_000;
        for k in 0..keys {
            let h = hash_bytes(format!("client-{k}").as_bytes());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            full.walk(h, &mut a, 1);
            without.walk(h, &mut b, 1);
            counts[a[0]] += 1;
            if a[0] != b[0] {
                moved += 1;
                assert_eq!(a[0], 2, "only keys of the removed server move");
            }
        }
        let share = moved as f64 / keys as f64;
        assert!((0.12..0.28).contains(&share), "moved {share}");
        for c in counts {
            let s = c as f64 / keys as f64;
            assert!((0.13..0.27).contains(&s), "share {s}");
        }
    }

    #[test]
    fn ring_walk_lists_each_server_once() {
        let ring = HashRing::new([("a", 1, 0), ("b", 2, 1), ("c", 1, 2)].into_iter());
        let mut out = Vec::new();
        ring.walk(12345, &mut out, 10);
        out.sort_unstable();
        assert_eq!(out, [0, 1, 2]);
    }

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
