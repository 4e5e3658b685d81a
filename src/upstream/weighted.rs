//! Weighted round robin (`balance = "weighted_round_robin"`): nginx's smooth
//! weighted sequence (5,1,1 gives a,a,b,a,c,a,a), computed once per config
//! and walked by the upstream's shared ticket, so it is exact across workers.
//!
//! When servers are out (drained, down, at `max_conns`), the ticket walks
//! the same sequence with their entries left out: ticket t takes the
//! (t mod W')-th remaining entry, W' being the weight still in rotation.
//! Their share is spread over the others in proportion to the weights, and
//! in the order the sequence already interleaves them, instead of falling
//! to whichever entry happens to follow theirs. Finding that entry must not
//! walk the whole sequence per request (W is up to 1000 per server), so
//! every `stride` positions the sequence keeps how often each server
//! appeared before: a binary search over those checkpoints, then a walk of
//! at most one stride.

use super::round_robin::rotate_by;

#[derive(Debug)]
pub struct SmoothSequence {
    /// Server positions (into the upstream's primaries), one per unit of weight.
    order: Vec<u32>,
    weights: Vec<u32>,
    /// Distance between checkpoints: at least one server count per entry
    /// of `order`, so `counts` is never larger than `order`.
    stride: usize,
    /// `counts[c * weights.len() + i]`: how often server `i` appears in
    /// `order[..c * stride]`.
    counts: Vec<u32>,
}

/// The shortest stride: below it, a walk is cheaper than another step of
/// the binary search.
const MIN_STRIDE: usize = 64;

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

impl SmoothSequence {
    pub fn new(weights: &[u32]) -> Self {
        let order: Vec<u32> =
            smooth_sequence(weights).into_iter().map(|i| u32::try_from(i).unwrap_or(u32::MAX)).collect();
        let n = weights.len();
        let stride = MIN_STRIDE.max(n);
        let mut counts = Vec::with_capacity(order.len().div_ceil(stride) * n);
        let mut running = vec![0u32; n];
        for (pos, &i) in order.iter().enumerate() {
            if pos % stride == 0 {
                counts.extend_from_slice(&running);
            }
            running[i as usize] += 1;
        }
        SmoothSequence { order, weights: weights.to_vec(), stride, counts }
    }

    /// Orders `out` (positions from `round_robin::available_first`: the
    /// `available` ones first, ascending) for `ticket`: the server the
    /// sequence gives first, then the other available ones in rotation
    /// after it, then the rest. With every server available this is
    /// exactly the sequence: ticket t leads with its t-th entry.
    pub fn order(&self, out: &mut [usize], available: usize, ticket: usize) {
        let (live, rest) = out.split_at_mut(available);
        rotate_by(rest, ticket);
        if live.is_empty() || self.order.is_empty() {
            return;
        }
        let first = if live.len() == self.weights.len() {
            Some(self.first_of_all(ticket))
        } else {
            let weight: usize = live.iter().map(|&i| self.weights.get(i).map_or(0, |&w| w as usize)).sum();
            self.nth_among(ticket % weight.max(1), live).map(|pos| self.order[pos] as usize)
        };
        // `live` is ascending (see `available_first`).
        let lead = first.and_then(|f| live.binary_search(&f).ok()).unwrap_or(ticket);
        rotate_by(live, lead);
    }

    /// The server `ticket` takes while every server is available: its
    /// entry of the sequence.
    pub fn first_of_all(&self, ticket: usize) -> usize {
        match self.order.len() {
            0 => 0,
            len => self.order[ticket % len] as usize,
        }
    }

    /// The position of the `k`-th entry (from 0) of the sequence whose
    /// server is in `live` (ascending server positions); None if there are
    /// not that many.
    fn nth_among(&self, k: usize, live: &[usize]) -> Option<usize> {
        let n = self.weights.len();
        let before = |c: usize| -> usize { live.iter().map(|&i| self.counts[c * n + i] as usize).sum() };
        // The last checkpoint with at most k entries of `live` before it:
        // checkpoint 0 has none, and counts only grow.
        let (mut lo, mut hi) = (0, self.counts.len() / n.max(1));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if before(mid) <= k {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut seen = before(lo);
        for (pos, &i) in self.order.iter().enumerate().skip(lo * self.stride) {
            if live.binary_search(&(i as usize)).is_ok() {
                if seen == k {
                    return Some(pos);
                }
                seen += 1;
            }
        }
        None
    }
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

    /// The first server `order` gives for `tickets` consecutive tickets
    /// with only the servers in `live` available.
    fn firsts(s: &SmoothSequence, live: &[usize], tickets: std::ops::Range<usize>) -> Vec<usize> {
        let n = s.weights.len();
        let mut out = Vec::new();
        tickets
            .map(|t| {
                out.clear();
                let m = crate::upstream::round_robin::available_first(n, |i| live.contains(&i), &mut out);
                s.order(&mut out, m, t);
                out[0]
            })
            .collect()
    }

    #[test]
    fn all_in_walks_the_sequence_exactly() {
        let s = SmoothSequence::new(&[5, 1, 1]);
        assert_eq!(firsts(&s, &[0, 1, 2], 0..14), [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn a_missing_servers_share_goes_to_the_others_in_proportion() {
        // Weights 1,2,3 without the weight-3 server: 1:2, in every window
        // of three tickets (the sequence c,b,a,c,b,c less its c's).
        let s = SmoothSequence::new(&[1, 2, 3]);
        let picks = firsts(&s, &[0, 1], 0..30);
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 10, "{picks:?}");
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 20, "{picks:?}");
        for w in picks.chunks(3) {
            let mut w = w.to_vec();
            w.sort_unstable();
            assert_eq!(w, [0, 1, 1]);
        }
        // Without the weight-2 server: 1:3.
        let picks = firsts(&s, &[0, 2], 0..40);
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 10, "{picks:?}");
    }

    #[test]
    fn the_rest_of_the_order_is_every_available_server_once_then_the_others() {
        let s = SmoothSequence::new(&[1, 2, 3, 4]);
        let mut out = Vec::new();
        for t in 0..50 {
            out.clear();
            let m = crate::upstream::round_robin::available_first(4, |i| i != 2, &mut out);
            s.order(&mut out, m, t);
            let mut head = out[..3].to_vec();
            head.sort_unstable();
            assert_eq!(head, [0, 1, 3]);
            assert_eq!(out[3], 2);
        }
    }

    #[test]
    fn nth_among_matches_a_walk_of_the_whole_sequence() {
        // Long enough for many checkpoints; every subset of servers.
        let weights = [700, 13, 400, 1, 999, 64];
        let s = SmoothSequence::new(&weights);
        assert!(s.counts.len() / weights.len() > 20, "too few checkpoints to test");
        for mask in 1u32..(1 << weights.len()) {
            let live: Vec<usize> = (0..weights.len()).filter(|&i| mask & (1 << i) != 0).collect();
            let walk: Vec<usize> = (0..s.order.len()).filter(|&p| live.contains(&(s.order[p] as usize))).collect();
            let total: u32 = live.iter().map(|&i| weights[i]).sum();
            assert_eq!(walk.len(), total as usize);
            for (k, &pos) in walk.iter().enumerate() {
                assert_eq!(s.nth_among(k, &live), Some(pos), "k {k} live {live:?}");
            }
            assert_eq!(s.nth_among(walk.len(), &live), None);
        }
    }

    #[test]
    fn many_servers_keep_the_checkpoints_no_larger_than_the_sequence() {
        let weights = vec![1; 300];
        let s = SmoothSequence::new(&weights);
        assert!(s.counts.len() <= s.order.len());
        assert_eq!(firsts(&s, &(0..300).filter(|i| i % 3 != 0).collect::<Vec<_>>(), 0..4), [1, 2, 4, 5]);
    }
}
