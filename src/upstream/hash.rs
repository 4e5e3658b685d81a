//! Consistent hashing (`balance = "hash"`): a ring with points per unit of
//! weight, walked from the request key's hash. Keys of a server that is out
//! go to its successors on the ring, which are spread over the others.

use super::stable_hash::hash_bytes;

/// Points per unit of weight on the hash ring: enough that keys spread
/// within a few percent of the weights.
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// A consistent-hash ring: removing one of N servers moves only the keys
/// that hashed to it (about 1/N).
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// `members`: (stable name, weight, index in the upstream). Each point
    /// is `hash_bytes("NAME#K")`, so a server keeps its points, and its
    /// keys, across restarts, upgrades and config order.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
