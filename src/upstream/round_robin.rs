//! Round robin (`balance = "round_robin"`, and the base order of
//! `least_conn` and `random_two`): one ticket per request from the
//! upstream's shared counter, so the rotation is exact across connections
//! and workers.
//!
//! The rotation runs over the servers that are available when the request
//! is planned (not drained, not down, not at `max_conns`): ticket t leads
//! with the (t mod m)-th of the m available ones. A rotation over all
//! servers that skips an unavailable one would hand its whole share to
//! the server after it (20/10 over three servers with one out); this way
//! it is spread evenly (15/15), as nginx's and HAProxy's round robin do.
//! Availability is read when the request is planned, lock-free; it may
//! change before the request claims its server, and then `try_acquire`
//! refuses and the next server in the order is tried.

/// Fills `out` with the positions `0..n`: those for which `available` holds
/// first, then the others, each part ascending. Returns how many are
/// available. `available` is asked once per position, so the two parts
/// never overlap even while servers change state.
pub fn available_first(n: usize, available: impl Fn(usize) -> bool, out: &mut Vec<usize>) -> usize {
    if n <= u64::BITS as usize {
        // The common size: one word holds the answers.
        let mut live = 0u64;
        for k in 0..n {
            live |= u64::from(available(k)) << k;
        }
        let all = u64::MAX >> (u64::BITS as usize - n.max(1));
        push_bits(live, out);
        push_bits(!live & all, out);
        return live.count_ones() as usize;
    }
    out.extend((0..n).filter(|&k| available(k)));
    let m = out.len();
    let mut next_available = 0;
    for k in 0..n {
        // `out[..m]` ascends, so one pass finds which positions it holds.
        if next_available < m && out[next_available] == k {
            next_available += 1;
        } else {
            out.push(k);
        }
    }
    m
}

/// Appends the positions of the set bits of `bits`, ascending.
fn push_bits(mut bits: u64, out: &mut Vec<usize>) {
    while bits != 0 {
        out.push(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// Rotates `part` left by `ticket` modulo its length.
pub fn rotate_by(part: &mut [usize], ticket: usize) {
    if !part.is_empty() {
        part.rotate_left(ticket % part.len());
    }
}

/// The round-robin order for `ticket` from `available_first`'s order: the
/// available servers in rotation, then the others in rotation (tried only
/// when none of the first could be: fail-open, or waiting for `max_conns`).
/// With every server available, ticket t leads with server t mod n.
pub fn order(out: &mut [usize], available: usize, ticket: usize) {
    let (live, rest) = out.split_at_mut(available);
    rotate_by(live, ticket);
    rotate_by(rest, ticket);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firsts(n: usize, live: &[usize], tickets: std::ops::Range<usize>) -> Vec<usize> {
        let mut out = Vec::new();
        tickets
            .map(|t| {
                out.clear();
                let m = available_first(n, |k| live.contains(&k), &mut out);
                order(&mut out, m, t);
                out[0]
            })
            .collect()
    }

    #[test]
    fn available_first_lists_each_position_once() {
        let mut out = Vec::new();
        assert_eq!(available_first(5, |k| k % 2 == 1, &mut out), 2);
        assert_eq!(out, [1, 3, 0, 2, 4]);
        out.clear();
        assert_eq!(available_first(3, |_| false, &mut out), 0);
        assert_eq!(out, [0, 1, 2]);
    }

    #[test]
    fn available_first_above_one_word_lists_each_position_once() {
        for n in [63, 64, 65, 130] {
            let mut out = Vec::new();
            let m = available_first(n, |k| k % 3 != 0, &mut out);
            assert_eq!(m, (0..n).filter(|k| k % 3 != 0).count());
            assert!(out[..m].windows(2).all(|w| w[0] < w[1]) && out[..m].iter().all(|k| k % 3 != 0));
            assert!(out[m..].windows(2).all(|w| w[0] < w[1]) && out[m..].iter().all(|k| k % 3 == 0));
            assert_eq!(out.len(), n);
        }
    }

    #[test]
    fn all_in_is_the_exact_rotation() {
        assert_eq!(firsts(4, &[0, 1, 2, 3], 0..8), [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn a_missing_servers_share_is_spread_evenly() {
        let picks = firsts(3, &[0, 2], 0..30);
        assert_eq!(picks.iter().filter(|&&k| k == 0).count(), 15);
        assert_eq!(picks.iter().filter(|&&k| k == 2).count(), 15);
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");
    }

    #[test]
    fn the_others_follow_in_rotation() {
        let mut out = Vec::new();
        let m = available_first(4, |k| k != 1, &mut out);
        order(&mut out, m, 4);
        assert_eq!(out, [2, 3, 0, 1]);
        out.clear();
        let m = available_first(3, |_| false, &mut out);
        order(&mut out, m, 5);
        assert_eq!(out, [2, 0, 1], "nothing available: the plain rotation");
    }
}
