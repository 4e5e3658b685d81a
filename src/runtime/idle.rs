//! The idle wheel: a worker's low-resolution timer for keep-alive
//! connections that wait for their next request. Waits are grouped by the
//! second their `client_idle` ends (on the precise clock,
//! `clock::precise_ms() / 1000`); each worker tick fires the buckets that
//! are due (and a graceful stop fires them all). A waiting connection holds
//! only an `Rc` and a slab key here — no timer entry, no buffer. The hot
//! wheel is the same structure keyed by periods of the coarse clock (see
//! `Worker::begin_hot_wait`): the wheel compares keys, whatever their unit.

use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
    key: Option<usize>,
}

impl Future for IdleExpiry {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.bucket.fired.get() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut waiters = this.bucket.waiters.borrow_mut();
        match this.key {
            Some(k) if waiters.contains(k) => waiters[k].clone_from(cx.waker()),
            _ => this.key = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for IdleExpiry {
    fn drop(&mut self) {
        if let Some(k) = self.key {
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
