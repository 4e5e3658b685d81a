//! `SparePool`: a worker's spare buffers, lent to connections while they
//! read or write and given back when they go idle, so a new request rarely
//! allocates. A burst (a thousand new connections) fills the pool up to its
//! bound; `trim` then gives back, every `SPARE_TRIM_MS` (250 ms), the buffers that sat
//! unused for the whole interval, so memory returns close to the
//! steady-state figure after the burst instead of staying at its peak.

use std::cell::{Cell, RefCell};

/// Spare buffers kept through a trim whatever the traffic (enough for the
/// requests of a quiet worker without a malloc each).
const FLOOR: usize = 8;

/// One kind of spare buffer (connection buffers, or small scratch ones).
pub struct SparePool {
    bufs: RefCell<Vec<Vec<u8>>>,
    /// Most spares kept at once.
    max: usize,
    /// The fewest spares held since the last trim: that many were not
    /// needed during the whole interval.
    low: Cell<usize>,
}

impl SparePool {
    /// An empty pool that keeps at most `max` spares.
    pub fn new(max: usize) -> Self {
        SparePool { bufs: RefCell::new(Vec::new()), max, low: Cell::new(0) }
    }

    /// A spare buffer of at least `capacity` bytes, or a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut bufs = self.bufs.borrow_mut();
        // A spare too small for this is kept for a request that fits it.
        let v = match bufs.last() {
            Some(v) if v.capacity() >= capacity => bufs.pop().unwrap_or_default(),
            _ => Vec::with_capacity(capacity),
        };
        self.low.set(self.low.get().min(bufs.len()));
        v
    }

    /// Keeps `v` (emptied) for reuse, unless the pool is full or `v` is
    /// smaller than `min_capacity`.
    pub fn put(&self, mut v: Vec<u8>, min_capacity: usize) {
        let mut bufs = self.bufs.borrow_mut();
        if bufs.len() < self.max && v.capacity() >= min_capacity {
            v.clear();
            bufs.push(v);
        }
    }

    /// Frees the spares that were not needed since the last trim (beyond
    /// `FLOOR`); returns how many bytes of capacity it freed.
    pub fn trim(&self) -> usize {
        let mut bufs = self.bufs.borrow_mut();
        let unused = self.low.get().saturating_sub(FLOOR);
        let mut freed = 0;
        for _ in 0..unused {
            if let Some(v) = bufs.pop() {
                freed += v.capacity();
            }
        }
        let keep = bufs.len().max(FLOOR);
        bufs.shrink_to(keep);
        self.low.set(bufs.len());
        freed
    }

    /// Spares held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.bufs.borrow().len()
    }

    /// Whether no spare is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_given_back_once_it_is_over() {
        let pool = SparePool::new(512);
        // A burst: 100 buffers out at once, then all back.
        let lent: Vec<Vec<u8>> = (0..100).map(|_| pool.take(1024)).collect();
        lent.into_iter().for_each(|v| pool.put(v, 1024));
        assert_eq!(pool.len(), 100);
        // During the next second only 3 are needed at a time.
        for _ in 0..50 {
            let a: Vec<Vec<u8>> = (0..3).map(|_| pool.take(1024)).collect();
            a.into_iter().for_each(|v| pool.put(v, 1024));
        }
        // `low` was still 0 from before the first trim: nothing measured yet.
        pool.trim();
        for _ in 0..50 {
            let a: Vec<Vec<u8>> = (0..3).map(|_| pool.take(1024)).collect();
            a.into_iter().for_each(|v| pool.put(v, 1024));
        }
        let freed = pool.trim();
        assert_eq!(pool.len(), 3 + FLOOR, "what the second needed, plus the floor");
        assert!(freed >= (100 - 3 - FLOOR) * 1024);
        // Steady traffic keeps what it uses.
        let a: Vec<Vec<u8>> = (0..3).map(|_| pool.take(1024)).collect();
        a.into_iter().for_each(|v| pool.put(v, 1024));
        pool.trim();
        assert_eq!(pool.len(), 3 + FLOOR);
    }

    #[test]
    fn small_or_surplus_buffers_are_not_kept() {
        let pool = SparePool::new(2);
        pool.put(Vec::with_capacity(10), 1024);
        assert!(pool.is_empty());
        for _ in 0..3 {
            pool.put(Vec::with_capacity(2048), 1024);
        }
        assert_eq!(pool.len(), 2);
    }
}
