//! The request watchdog: a worker's coarse timer for the I/O timeouts of
//! requests in flight (`upstream_send`, `upstream_response`, `client_send`,
//! `client_body`). A request takes one slot when its head is complete and
//! gives it back when it ends; each timed read or write only writes a
//! deadline on the coarse clock into that slot. The worker's tick fires the
//! slots that are due, so a timeout ends between its value and about one
//! tick plus the clock's resolution later, never earlier.
//!
//! Why not a runtime timer per operation: a request does three or more
//! timed operations, and each timer costs a precise clock read, a wheel
//! insert and remove, and (monoio's timer entries are 128-byte aligned) an
//! aligned allocation for every future that holds one. Timeouts here are
//! seconds; a tick's resolution is enough.

use super::clock::{coarse_ms, coarse_slack_ms};
use slab::Slab;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A timed operation did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

struct Slot {
    /// On the coarse clock (`clock::coarse_ms`), slack included;
    /// `u64::MAX` while no operation is timed.
    deadline: u64,
    fired: bool,
    waker: Option<Waker>,
}

/// A worker's request watchdog; see the module doc.
#[derive(Default)]
pub struct Watchdog {
    slots: RefCell<Slab<Slot>>,
    /// Reused by `tick` to wake outside the slab's borrow.
    due: RefCell<Vec<Waker>>,
}

/// One request's slot in the watchdog, from `enter` until `leave`. Holds
/// the slab key plus one, so an `Option<WatchSlot>` is one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSlot(std::num::NonZeroUsize);

impl WatchSlot {
    fn key(self) -> usize {
        self.0.get() - 1
    }
}

impl Watchdog {
    /// A slot for one request; `leave` gives it back.
    pub fn enter(&self) -> WatchSlot {
        let key = self.slots.borrow_mut().insert(Slot { deadline: u64::MAX, fired: false, waker: None });
        WatchSlot(std::num::NonZeroUsize::MIN.saturating_add(key))
    }

    /// Gives the slot of a request that ended back.
    pub fn leave(&self, slot: WatchSlot) {
        let mut slots = self.slots.borrow_mut();
        if slots.contains(slot.key()) {
            slots.remove(slot.key());
        }
    }

    /// The handle that times the operations of the request in `slot`;
    /// `None` (no request in flight) times nothing, which is a bug that
    /// debug builds report.
    pub fn watch(&self, slot: Option<WatchSlot>) -> Watch<'_> {
        debug_assert!(slot.is_some(), "a timed operation outside a request");
        Watch { dog: self, key: slot.map_or(usize::MAX, WatchSlot::key) }
    }

    /// Fires the slots that are due at `coarse_now_ms`, a reading of the
    /// coarse clock.
    pub fn tick(&self, coarse_now_ms: u64) {
        let mut due = self.due.borrow_mut();
        for (_, slot) in self.slots.borrow_mut().iter_mut() {
            if !slot.fired && slot.deadline <= coarse_now_ms {
                slot.fired = true;
                due.extend(slot.waker.take());
            }
        }
        for waker in due.drain(..) {
            waker.wake();
        }
    }

    /// Times the slot's next operation. One operation per slot at a time:
    /// a request's reads and writes follow each other.
    fn arm(&self, key: usize, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut slots = self.slots.borrow_mut();
        debug_assert!(slots.contains(key), "timed operation outside a request (slot {key})");
        if let Some(slot) = slots.get_mut(key) {
            debug_assert_eq!(slot.deadline, u64::MAX, "two timed operations at once in slot {key}");
            slot.deadline = coarse_ms().saturating_add(ms).saturating_add(coarse_slack_ms());
            slot.fired = false;
        }
    }

    fn disarm(&self, key: usize) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(key) {
            slot.deadline = u64::MAX;
        }
    }

    /// Whether the slot fired; if not, leaves `waker` to be woken when it
    /// does.
    fn poll_fired(&self, key: usize, waker: &Waker) -> bool {
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
    /// future would grow by that much. Dropping it, done or not, clears the
    /// deadline, so a later tick cannot wake the task for nothing.
    pub struct Limited<'a, F> {
        #[pin]
        op: F,
        watch: Watch<'a>,
    }

    impl<F> PinnedDrop for Limited<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let Watch { dog, key } = this.watch;
            dog.disarm(key);
        }
    }
}

impl<F: Future> Future for Limited<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Watch { dog, key } = *this.watch;
        // The operation first: one that finishes as its deadline passes
        // counts as finished, as with monoio's `timeout`.
        if let Poll::Ready(v) = this.op.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if dog.poll_fired(key, cx.waker()) {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use std::rc::Rc;

    /// Pending on its first poll (waking itself), then ready.
    fn pending_once() -> impl Future<Output = u8> {
        let mut polled = false;
        std::future::poll_fn(move |cx| {
            if std::mem::replace(&mut polled, true) {
                return Poll::Ready(1);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    fn deadline(dog: &Watchdog, key: WatchSlot) -> u64 {
        dog.slots.borrow()[key.key()].deadline
    }

    #[monoio::test(timer_enabled = true)]
    async fn an_operation_that_finishes_in_time_is_not_cut() {
        let dog = Watchdog::default();
        let key = dog.enter();
        let r = dog.watch(Some(key)).limit(Duration::from_millis(10), pending_once()).await;
        assert_eq!(r, Ok(1));
        assert_eq!(deadline(&dog, key), u64::MAX, "a finished operation leaves no deadline");
        dog.tick(u64::MAX - 1);
        assert!(!dog.slots.borrow()[key.key()].fired);
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_stalled_operation_ends_at_the_first_tick_past_its_deadline() {
        let dog = Rc::new(Watchdog::default());
        let key = dog.enter();
        let d = Rc::clone(&dog);
        let before = coarse_ms();
        let op =
            monoio::spawn(async move { d.watch(Some(key)).limit(Duration::from_millis(100), pending::<()>()).await });
        monoio::time::sleep(Duration::from_millis(1)).await;
        let after = coarse_ms();
        let due = deadline(&dog, key);
        let slack = coarse_slack_ms();
        assert!((before + 100 + slack..=after + 100 + slack).contains(&due), "deadline {due}: clock + limit + slack");
        dog.tick(due - 1);
        monoio::time::sleep(Duration::from_millis(1)).await;
        assert!(!dog.slots.borrow()[key.key()].fired, "fired before its deadline");
        dog.tick(due);
        assert_eq!(op.await, Err(Elapsed));
        dog.leave(key);
        assert!(dog.slots.borrow().is_empty());
    }

    #[monoio::test(timer_enabled = true)]
    async fn a_fired_slot_is_rearmed_by_the_next_operation() {
        let dog = Rc::new(Watchdog::default());
        let key = dog.enter();
        let d = Rc::clone(&dog);
        let op = monoio::spawn(async move { d.watch(Some(key)).limit(Duration::ZERO, pending::<()>()).await });
        monoio::time::sleep(Duration::from_millis(1)).await;
        dog.tick(u64::MAX - 1);
        assert_eq!(op.await, Err(Elapsed));
        assert!(dog.slots.borrow()[key.key()].fired);
        // Pending once: a slot still marked fired would end it at once.
        let r = dog.watch(Some(key)).limit(Duration::from_secs(1), pending_once()).await;
        assert_eq!(r, Ok(1));
    }

    #[test]
    fn dropping_a_pending_operation_clears_its_deadline() {
        let dog = Watchdog::default();
        let key = dog.enter();
        let mut op = Box::pin(dog.watch(Some(key)).limit(Duration::from_secs(1), pending::<()>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(op.as_mut().poll(&mut cx).is_pending());
        assert_ne!(deadline(&dog, key), u64::MAX);
        drop(op);
        assert_eq!(deadline(&dog, key), u64::MAX);
    }
}
