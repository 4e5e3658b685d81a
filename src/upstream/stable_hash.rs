//! The hash of `balance = "hash"`: request keys and ring points. It must
//! give the same value in every worker, every process and every build, or a
//! restart or an upgrade would move keys between servers. `std`'s
//! `DefaultHasher` promises that only within one build ("the algorithm may
//! change between Rust releases"), so the algorithm is written out here.
//!
//! SipHash-1-3 with both keys 0, over the key's length as 8 little-endian
//! bytes followed by the key's bytes. That is exactly what `DefaultHasher`
//! computed for `bytes.hash()` on 64-bit Linux up to now (checked against
//! Rust 1.95 on 4,000 keys), so no key moved when it was frozen here. The
//! tests pin known values: a change to them moves keys and must be
//! deliberate (and called out in the release notes).

/// SipHash's state.
struct Sip13 {
    v: [u64; 4],
}

impl Sip13 {
    /// The initial state for keys k0 = k1 = 0 ("somepseudorandomlygeneratedbytes").
    fn new() -> Self {
        Sip13 { v: [0x736f_6d65_7073_6575, 0x646f_7261_6e64_6f6d, 0x6c79_6765_6e65_7261, 0x7465_6462_7974_6573] }
    }

    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.v;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    /// One 8-byte word of the message, with one compression round (the "1").
    fn word(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }

    /// The last word (`tail`, with the message length in its top byte) and
    /// three finalization rounds (the "3").
    fn finish(mut self, tail: u64) -> u64 {
        self.word(tail);
        self.v[2] ^= 0xff;
        for _ in 0..3 {
            self.round();
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// The stable 64-bit hash of a request key or ring point name (see the
/// module doc for the algorithm).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut sip = Sip13::new();
    // The length prefix is exactly one word, so the key's words stay aligned.
    sip.word(bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        sip.word(u64::from_le_bytes(w.try_into().expect("chunks_exact gives 8 bytes")));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    // The message is the prefix and the key; SipHash keeps its length mod 256.
    let message_len = (bytes.len() as u64).wrapping_add(8);
    sip.finish(u64::from_le_bytes(tail) | (message_len << 56))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: if one changes, every `hash` upstream's keys move.
    #[test]
    fn known_values_never_change() {
        let known: [(&[u8], u64); 6] = [
            (b"", 0xbd60_acb6_58c7_9e45),
            (b"a", 0xbeb9_a6bb_f61b_58b4),
            (&[10, 1, 2, 3], 0xfde7_1223_11a3_dacf),
            (b"10.0.0.1:80#0", 0xe5d4_aab4_d409_4e73),
            (b"session=0123456789abcdef", 0xdf14_903b_5621_3830),
            (b"exactly8", 0x187f_973f_b044_a510),
        ];
        for (key, want) in known {
            assert_eq!(hash_bytes(key), want, "key {:?}", String::from_utf8_lossy(key));
        }
    }
}
