//! `CachePadded`: a value alone on its cache line, for the few atomics
//! that every request on every worker writes (the round-robin ticket, each
//! server's in-flight count). A write to a line takes it away from every
//! other core's cache; padding keeps those writes from also evicting the
//! read-mostly fields that would otherwise share the line (the upstream's
//! settings, each server's health flags), which every request reads.
//!
//! 128 bytes on x86-64 and AArch64, as crossbeam's `CachePadded`: Intel's
//! L2 spatial prefetcher pulls 64-byte lines in 128-byte aligned pairs, and
//! several AArch64 cores have 128-byte lines. 64 bytes elsewhere.

use std::ops::Deref;

/// `T` aligned to, and so alone on, its cache line (see the module doc).
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), repr(align(64)))]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_padded_value_fills_its_lines() {
        let line = std::mem::align_of::<CachePadded<AtomicUsize>>();
        assert!(line >= 64);
        assert_eq!(std::mem::size_of::<CachePadded<AtomicUsize>>(), line);
        let two = [CachePadded(AtomicUsize::new(0)), CachePadded(AtomicUsize::new(0))];
        assert_eq!(std::ptr::from_ref(&two[1]) as usize - std::ptr::from_ref(&two[0]) as usize, line);
    }
}
