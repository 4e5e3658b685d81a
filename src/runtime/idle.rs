//! A worker's timers for keep-alive connections that wait for their next
//! request (`ConnectionWaits`): the idle wheel of `client_idle` deadlines,
//! grouped by the second they end on the precise clock
//! (`clock::precise_ms() / 1000`); the hot wheel of hot-wait windows and
//! parking deadlines, keyed by `HOT_WINDOW_MS` periods of the coarse clock;
//! and the budget of hot waits. Each worker tick fires the buckets that are
//! due (a graceful stop fires them all). A waiting connection holds only an
//! `Rc` and a slab key here — no timer entry, no buffer. The wheel compares
//! keys, whatever their unit.

use super::clock::{coarse_ms, precise_ms};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How long a hot wait (see `begin_hot_wait`) may hold its buffers before it
/// is cancelled: between one and two of these (on the coarse clock, so give
/// or take its resolution), plus up to one worker tick.
pub const HOT_WINDOW_MS: u64 = 20;
/// How many `HOT_WINDOW_MS` periods a connection waits for its next request
/// (40-60 ms) before it parks: long enough that a client in a quick
/// exchange never pays for a park, short enough that a burst of new
/// connections that then idle never holds a session task each.
const PARK_AFTER_PERIODS: u64 = 3;
/// Most hot waits per worker at once. Each pins a connection's buffers, so
/// this bounds what connections that go quiet can hold.
const HOT_WAITS_MAX: usize = 256;

/// A worker's timers for connections waiting for their next request.
#[derive(Default)]
pub struct ConnectionWaits {
    /// Idle keep-alive connections, by the second their `client_idle` ends
    /// on the precise clock (`clock::precise_ms() / 1000`).
    idle_wheel: IdleWheel,
    /// Hot waits and parking, by the `HOT_WINDOW_MS` period of the coarse
    /// clock (`clock::coarse_ms() / HOT_WINDOW_MS`) in which they end.
    hot_wheel: IdleWheel,
    /// Hot waits in progress (at most `HOT_WAITS_MAX`).
    hot_waits: Cell<usize>,
}

impl ConnectionWaits {
    /// Completes within a second after `idle` from now, or at a graceful
    /// stop: the deadline of a connection waiting for its next request, in
    /// seconds of the precise clock.
    pub fn idle_expiry(&self, idle: Duration) -> IdleExpiry {
        let due = (precise_ms() + u64::try_from(idle.as_millis()).unwrap_or(u64::MAX / 2)).div_ceil(1000);
        self.idle_wheel.expiry(due)
    }

    /// Completes `PARK_AFTER_PERIODS` hot-wheel periods from now (or at a
    /// graceful stop): when a connection still waiting for its next request
    /// leaves its session's task for a small one (`proxy/parked.rs`).
    pub fn park_expiry(&self) -> IdleExpiry {
        self.hot_wheel.expiry(coarse_ms() / HOT_WINDOW_MS + PARK_AFTER_PERIODS)
    }

    /// Starts a hot wait if the budget allows: a read that holds the
    /// connection's buffer while the next request is expected within
    /// moments, instead of a readiness poll and then a read (one ring
    /// operation fewer per request). The expiry, on the coarse clock, says
    /// when to cancel it; `end_hot_wait` must follow.
    pub fn begin_hot_wait(&self) -> Option<IdleExpiry> {
        if self.hot_waits.get() >= HOT_WAITS_MAX {
            return None;
        }
        self.hot_waits.set(self.hot_waits.get() + 1);
        Some(self.hot_wheel.expiry(coarse_ms() / HOT_WINDOW_MS + 2))
    }

    /// Ends a hot wait that `begin_hot_wait` started.
    pub fn end_hot_wait(&self) {
        self.hot_waits.set(self.hot_waits.get().saturating_sub(1));
    }

    /// Ends the waits that are due at `coarse` (all of them when `all`, at
    /// a graceful stop); called on every worker tick.
    pub fn fire(&self, coarse: u64, all: bool) {
        self.hot_wheel.fire(if all { None } else { Some(coarse / HOT_WINDOW_MS) });
        self.idle_wheel.fire(if all { None } else { Some(precise_ms() / 1000) });
    }
}

#[derive(Default)]
pub struct IdleBucket {
    fired: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl IdleBucket {
    fn fire(&self) {
        self.fired.set(true);
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().collect();
        for waker in waiters {
            waker.wake();
        }
    }
}

#[derive(Default)]
pub struct IdleWheel {
    buckets: RefCell<BTreeMap<u64, Rc<IdleBucket>>>,
}

impl IdleWheel {
    /// A future that completes once `fire` is called with `due` or a later
    /// key (or at a stop). Keys are the caller's unit: seconds or periods.
    pub fn expiry(&self, due: u64) -> IdleExpiry {
        let bucket = Rc::clone(self.buckets.borrow_mut().entry(due).or_default());
        IdleExpiry { bucket, key: None }
    }

    /// Fires the buckets keyed at or before `now` (all when `None`).
    pub fn fire(&self, now: Option<u64>) {
        loop {
            let entry = {
                let mut buckets = self.buckets.borrow_mut();
                match buckets.first_key_value() {
                    Some((&due, _)) if now.is_none_or(|n| due <= n) => buckets.remove(&due),
                    _ => None,
                }
            };
            match entry {
                Some(bucket) => bucket.fire(),
                None => return,
            }
        }
    }
}

/// Completes when its bucket fires. Dropping it (the connection got bytes
/// first) removes its waker, so a later firing wakes nobody needlessly.
pub struct IdleExpiry {
    bucket: Rc<IdleBucket>,
    /// The waker's slot in the bucket. `u32`: every parked connection holds
    /// one of these, and four billion waiters per bucket cannot happen (one
    /// that could not be keyed would only wait for the bucket to fire).
    key: Option<u32>,
}

impl Future for IdleExpiry {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.bucket.fired.get() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut waiters = this.bucket.waiters.borrow_mut();
        match this.key.map(|k| k as usize) {
            Some(k) if waiters.contains(k) => waiters[k].clone_from(cx.waker()),
            _ => this.key = u32::try_from(waiters.insert(cx.waker().clone())).ok(),
        }
        Poll::Pending
    }
}

impl Drop for IdleExpiry {
    fn drop(&mut self) {
        if let Some(k) = self.key.map(|k| k as usize) {
            let mut waiters = self.bucket.waiters.borrow_mut();
            if waiters.contains(k) {
                waiters.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test(timer_enabled = true)]
    async fn buckets_fire_in_order_and_all_at_a_stop() {
        let wheel = IdleWheel::default();
        let (early, late) = (wheel.expiry(5), wheel.expiry(9));
        let early = monoio::spawn(early);
        let late = monoio::spawn(late);
        monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        wheel.fire(Some(6));
        early.await;
        assert_eq!(wheel.buckets.borrow().len(), 1, "the later bucket waits");
        wheel.fire(None);
        late.await;
        assert!(wheel.buckets.borrow().is_empty());
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_dropped_wait_leaves_no_waker() {
        let wheel = IdleWheel::default();
        let mut wait = Box::pin(wheel.expiry(3));
        let waker = futures_noop_waker();
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        let bucket = Rc::clone(&wait.bucket);
        assert_eq!(bucket.waiters.borrow().len(), 1);
        drop(wait);
        assert_eq!(bucket.waiters.borrow().len(), 0);
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }
}
