//! Parked connections: a keep-alive connection still idle some 50 ms into
//! its wait leaves its session's task for a small one.
//!
//! A task's allocation is as large as its future at its largest, so a
//! `Session` waiting in its own task costs an idle connection about 1.5 KiB
//! however little of it the wait uses. A `Parked` holds only what a session
//! is rebuilt from (the stream, the client's address, the listener, two
//! flags) and its `client_idle` expiry: a few hundred bytes. When the
//! client's next bytes come, a fresh `Session` task serves them; when the
//! expiry fires, the parked task closes the connection itself.
//!
//! Parking happens only after 40-60 ms of waiting (`ConnectionWaits::park_expiry`),
//! so a client in a quick exchange never pays for the two spawns and the
//! cancelled poll that a park costs (about a microsecond), and a burst of
//! new connections that then idle never holds a session task each: their
//! memory is reused by the next ones instead of staying fragmented.

use super::Session;
use crate::conn::Conn;
use crate::runtime::{IdleExpiry, Worker};
use monoio::io::AsyncWriteRent;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// An idle keep-alive connection outside any session (see the module doc).
pub(super) struct Parked {
    /// The worker whose pools and counters the resumed session uses.
    pub(super) worker: Rc<Worker>,
    /// The listener that accepted the connection.
    pub(super) listener: Arc<str>,
    /// The client's connection, with no operation in flight.
    pub(super) client: Conn,
    /// The client's address (after any PROXY header).
    pub(super) peer: SocketAddr,
    /// The session's per-connection decision to believe forwarding fields
    /// (a PROXY `LOCAL`/`UNKNOWN` client's is not the listener's default).
    pub(super) believe_forwarded: bool,
    /// No request has been read yet (a graceful stop lets it ask).
    pub(super) fresh: bool,
    /// The connection's `client_idle` deadline, carried over unchanged.
    pub(super) expiry: IdleExpiry,
}

impl Session {
    /// Leaves this task for a parked one. The session holds no buffer and
    /// no operation in flight here (`read_head`'s idle path shrank it).
    pub(super) fn park(self, expiry: IdleExpiry) {
        let Session { worker, listener, client, peer, believe_forwarded, fresh, .. } = self;
        worker.metrics.borrow_mut().parked += 1;
        monoio::spawn(Parked { worker, listener, client, peer, believe_forwarded, fresh, expiry }.wait());
    }

    /// A session for a parked connection whose client sent bytes (`woken`),
    /// or whose worker began a graceful stop: already counted as open.
    fn resumed(p: Parked, woken: bool) -> Self {
        let mut session = Session::counted(p.worker, p.listener, p.client, p.peer);
        session.believe_forwarded = p.believe_forwarded;
        session.fresh = p.fresh;
        // The bytes are there: read them at once, neither a hot wait (the
        // client was slow) nor a second poll.
        session.woken = woken;
        session
    }
}

impl Parked {
    /// Waits for the client's bytes or the idle deadline. Not an `async
    /// fn`: its argument would be stored twice in the future (once as the
    /// argument, once as the local it is moved to), a third of its size.
    #[allow(clippy::manual_async_fn)] // see above: the size is the point
    fn wait(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let readable = monoio::select! {
                r = self.client.readable(false) => r.is_ok(),
                _ = &mut self.expiry => false,
            };
            self.worker.metrics.borrow_mut().parked -= 1;
            // At a stop (the wheel fires every expiry then), a request
            // already on its way, or a connection that never asked yet, is
            // the session's to serve or close; the rest close here.
            let stopping = self.worker.is_shutting_down();
            let waiting = readable || (stopping && self.client.has_bytes_waiting());
            if waiting || (stopping && self.fresh) {
                monoio::spawn(Session::resumed(self, waiting).run());
                return;
            }
            // Idle out, or a stop, as a session would close: a TLS client
            // gets its close_notify.
            if self.client.tls().is_some() {
                let _ = Box::pin(self.client.shutdown()).await;
            }
            self.worker.metrics.borrow_mut().connection_closed(&self.listener);
            self.worker.connection_closed();
        }
    }
}

#[cfg(test)]
mod size_tests {
    fn future_size<A, F: FnOnce(A) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// The whole point of parking: a parked connection's task is a fraction
    /// of a session's (the idle-memory target depends on it).
    #[test]
    fn a_parked_task_is_small() {
        let wait = future_size(super::Parked::wait);
        assert!(wait <= 320, "Parked::wait future grew to {wait} bytes");
    }
}
