//! The request watchdog: a worker's coarse timer for the I/O timeouts of
//! requests in flight (`upstream_send`, `upstream_response`, `client_send`,
//! `client_body`). A request takes one slot when its head is complete and
//! gives it back when it ends; each timed read or write only writes a
//! deadline into that slot. The worker's tick fires the slots that are due.
//!
//! Why not a runtime timer per operation: a request does three or more
//! timed operations, and each timer costs a clock read, a wheel insert and
//! remove, and (monoio's timer entries are 128-byte aligned) an aligned
//! allocation for every future that holds one. Timeouts here are seconds;
//! a tick's resolution is enough.

use slab::Slab;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Added to every deadline: the clock is read once per tick, so it lags the
/// real time by up to one tick, and a timeout must never end early.
const SLACK_MS: u64 = super::worker::TICK_MS;

/// A timed operation did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

struct Slot {
    /// On the `now_ms` clock; `u64::MAX` while no operation is timed.
    deadline: u64,
    fired: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
pub struct Watchdog {
    /// The `now_ms` clock as of the last tick.
    now: Cell<u64>,
    slots: RefCell<Slab<Slot>>,
    /// Reused by `tick` to wake outside the slab's borrow.
    due: RefCell<Vec<Waker>>,
}

impl Watchdog {
    pub fn new(now_ms: u64) -> Self {
        Watchdog { now: Cell::new(now_ms), ..Watchdog::default() }
    }

    /// The clock as of the last tick.
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// A slot for one request; `leave` gives it back.
    pub fn enter(&self) -> usize {
        self.slots.borrow_mut().insert(Slot { deadline: u64::MAX, fired: false, waker: None })
    }

    pub fn leave(&self, key: usize) {
        let mut slots = self.slots.borrow_mut();
        if slots.contains(key) {
            slots.remove(key);
        }
    }

    /// The handle that times the operations of the request in slot `key`.
    pub fn watch(&self, key: usize) -> Watch<'_> {
        Watch { dog: self, key }
    }

    /// Sets the clock to `now_ms` and fires the slots that are due.
    pub fn tick(&self, now_ms: u64) {
        self.now.set(now_ms);
        let mut due = self.due.borrow_mut();
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if !slot.fired && slot.deadline <= now_ms {
                slot.fired = true;
                due.extend(slot.waker.take());
            }
        }
        for waker in due.drain(..) {
            waker.wake();
        }
    }

    fn arm(&self, key: usize, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        if let Some(slot) = self.slots.borrow_mut().get_mut(key) {
            slot.deadline = self.now.get().saturating_add(ms).saturating_add(SLACK_MS);
            slot.fired = false;
        }
    }

    fn disarm(&self, key: usize) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(key) {
            slot.deadline = u64::MAX;
        }
    }

    /// Whether the slot fired; if not, `waker` is woken when it does.
    fn fired(&self, key: usize, waker: &Waker) -> bool {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(key) else { return false };
        if slot.fired {
            return true;
        }
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        false
    }
}

/// Times the operations of one request.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    dog: &'a Watchdog,
    key: usize,
}

impl<'a> Watch<'a> {
    /// Runs `op`, or gives up (dropping it) once `limit` has passed.
    pub fn limit<F: Future>(self, limit: Duration, op: F) -> Limited<'a, F> {
        self.dog.arm(self.key, limit);
        Limited { op, watch: self }
    }
}

pin_project_lite::pin_project! {
    /// An operation with a deadline, from `Watch::limit`. A named future
    /// rather than an `async fn`, whose state would hold the operation
    /// twice (as the argument and pinned), and every request's exchange
    /// future would grow by that much.
    pub struct Limited<'a, F> {
        #[pin]
        op: F,
        watch: Watch<'a>,
    }
}

impl<F: Future> Future for Limited<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Watch { dog, key } = *this.watch;
        if let Poll::Ready(v) = this.op.poll(cx) {
            dog.disarm(key);
            return Poll::Ready(Ok(v));
        }
        if dog.fired(key, cx.waker()) {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    #[monoio::test(timer_enabled = true)]
    async fn an_operation_that_finishes_in_time_is_not_cut() {
        let dog = Watchdog::default();
        let key = dog.enter();
        let r = dog.watch(key).limit(Duration::from_millis(10), async { 7 }).await;
        assert_eq!(r, Ok(7));
        // A tick long after the operation ended fires nothing.
        dog.tick(1_000_000);
        assert!(!dog.slots.borrow()[key].fired);
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_stalled_operation_ends_at_the_first_tick_past_its_deadline() {
        let dog = std::rc::Rc::new(Watchdog::default());
        dog.tick(1_000);
        let key = dog.enter();
        let d = std::rc::Rc::clone(&dog);
        let op = monoio::spawn(async move { d.watch(key).limit(Duration::from_millis(100), pending::<()>()).await });
        monoio::time::sleep(Duration::from_millis(1)).await;
        dog.tick(1_100);
        monoio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(dog.slots.borrow()[key].deadline, 1_100 + SLACK_MS, "deadline: clock + limit + slack");
        assert!(!dog.slots.borrow()[key].fired, "fired before the slack passed");
        dog.tick(1_100 + SLACK_MS);
        assert_eq!(op.await, Err(Elapsed));
        dog.leave(key);
        assert!(dog.slots.borrow().is_empty());
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_fired_slot_is_rearmed_by_the_next_operation() {
        let dog = Watchdog::default();
        let key = dog.enter();
        dog.arm(key, Duration::ZERO);
        dog.tick(u64::MAX - 1);
        assert!(dog.slots.borrow()[key].fired);
        dog.tick(0);
        let r = dog.watch(key).limit(Duration::from_secs(1), async { 1 }).await;
        assert_eq!(r, Ok(1));
    }
}
