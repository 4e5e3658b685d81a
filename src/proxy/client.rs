//! The client side of a session between requests: waiting for and reading
//! the next request head, lending buffers back to the worker while idle,
//! and closing without losing the last response.

use super::error::ProxyError;
use super::local::CONTINUE;
use super::{Exchange, Session, KEEP_SCRATCH_BYTES, LINGER};
use crate::conn::Conn;
use crate::http::head::{leading_empty_lines, HeadError};
use crate::http::request::RequestError;
use crate::io_buf::ConnBuf;
use crate::runtime::clock::precise_ms;
use crate::runtime::Worker;
use crate::runtime::{IdleExpiry, HOT_WINDOW_MS};
use monoio::io::{AsyncWriteRent, Canceller};
use monoio::time::timeout;
use std::rc::Rc;
use std::time::Instant;

/// How a wait for the next request ended.
pub(super) enum Waited {
    /// A complete head of this many bytes is buffered.
    Head(usize),
    /// The client closed or idled out between requests (no answer owed).
    Closed,
    /// Idle for long enough to leave the session's task: park the
    /// connection until its bytes come or this `client_idle` expiry fires.
    Park(IdleExpiry),
}

impl Session {
    /// Hands the full-size buffers back to the worker while the connection
    /// waits for its next request.
    pub(super) fn shrink_for_idle(&mut self) {
        self.canceller = None;
        if let Some(v) = self.cbuf.release() {
            self.worker.put_buf(v);
        }
        if let Some(v) = self.ubuf.release() {
            self.worker.put_buf(v);
        }
        self.shrink_for_hot();
        for scratch in [&mut self.out, &mut self.replay, &mut self.uhead, &mut self.path, &mut self.log_req] {
            if scratch.capacity() > 0 {
                self.worker.put_scratch(std::mem::take(scratch));
            }
        }
    }

    /// Before a hot wait: scratch buffers that one large request grew (a
    /// replay body, a long head) go back; small ones stay for the next
    /// request, which is expected within moments.
    fn shrink_for_hot(&mut self) {
        for scratch in [&mut self.out, &mut self.replay, &mut self.uhead, &mut self.path, &mut self.log_req] {
            if scratch.capacity() > KEEP_SCRATCH_BYTES {
                self.worker.put_buf(std::mem::take(scratch));
            }
        }
    }

    /// Borrows small scratch buffers from the worker for the request that
    /// just arrived (idle connections hold none).
    pub(super) fn equip(&mut self) {
        for scratch in [&mut self.out, &mut self.uhead, &mut self.path] {
            if scratch.capacity() == 0 {
                *scratch = self.worker.take_scratch();
            }
        }
    }

    /// With unread request bytes buffered, or a request body left unread
    /// after an early response: half-closes, then reads briefly
    /// so they do not turn the close into a reset that could destroy the
    /// last response (RFC 9112 §9.6). Otherwise dropping the stream is the
    /// whole close: a half-close first would only cost a syscall, since a
    /// close with nothing unread sends the same FIN.
    /// A TLS connection always sends its `close_notify` first, so that a
    /// response delimited by the close cannot be cut short unnoticed.
    pub(super) async fn close(&mut self) {
        if !self.cbuf.is_empty() || self.req.body_unread {
            let _ = self.client.shutdown().await;
            self.cbuf.clear();
            Box::pin(linger(&mut self.cbuf, &mut self.client)).await;
        } else if self.client.tls().is_some() {
            let _ = Box::pin(self.client.shutdown()).await;
        }
    }

    /// Reads until a complete head is buffered (`Waited::Head`), or ends
    /// the wait without a request (see `Waited`).
    pub(super) async fn read_head(&mut self) -> Result<Waited, ProxyError> {
        self.scanner.reset();
        self.line_check.reset();
        self.req.head_began = None;
        loop {
            let skip = leading_empty_lines(self.cbuf.data());
            if skip > 0 {
                // The scanner's resume point is relative to the buffer start.
                self.cbuf.consume(skip);
                self.scanner.reset();
                self.line_check.reset();
            }
            if !self.cbuf.is_empty() {
                match self.scanner.scan(self.cbuf.data(), self.config.limits.max_header_bytes) {
                    Ok(Some(n)) => return Ok(Waited::Head(n)),
                    // Incomplete: refuse now what could never become a
                    // request (a complete head is left to the parser).
                    Ok(None) => {
                        if let Err(e) = self.line_check.check(self.cbuf.data(), self.config.limits.max_target_bytes) {
                            self.worker.metrics.borrow_mut().edge.request_lines_refused += 1;
                            return Err(ProxyError::Request(e));
                        }
                    }
                    Err(HeadError::BareLf) => return Err(ProxyError::Request(RequestError::BadRequest("bare LF"))),
                    Err(HeadError::TooLarge) => return Err(ProxyError::Request(RequestError::HeadTooLarge)),
                }
                // The head's total deadline runs from its first bytes; a
                // head that came whole in one read needs no clock read.
                self.req.head_began.get_or_insert_with(Instant::now);
                // A read that times out takes the buffer with it: keep what
                // the access log needs of the line first.
                self.keep_line_for_log();
            }
            let deadline = self.req.head_began.map(|began| began + self.config.timeouts.client_header);
            let read = match deadline {
                None if self.woken => {
                    // Parked, and the bytes are there (`parked.rs`).
                    self.woken = false;
                    self.hot = false;
                    self.read_ready().await
                }
                None if self.hot => match self.hot_read().await {
                    Some(read) => read,
                    // Nothing came within the window: wait without buffers.
                    None => continue,
                },
                None => {
                    let stopping = self.worker.is_shutting_down();
                    // At a graceful stop an idle connection closes now,
                    // unless its next request already arrived (then it is
                    // served, with `Connection: close`).
                    if stopping && !self.fresh && !self.client.has_bytes_waiting() {
                        return Ok(Waited::Closed);
                    }
                    // Poll, then read: an idle connection holds no buffer
                    // and no timer while it waits, only a slot in the
                    // worker's idle wheel (which the worker fires at a
                    // graceful stop).
                    self.shrink_for_idle();
                    let since = precise_ms();
                    let readable = if stopping {
                        // Accepted but not yet asked anything (or asked,
                        // per the peek): its request is on its way, which
                        // is what a connection accepted just before a stop
                        // looks like. The worker's exit bounds this wait.
                        self.client.readable(false).await.is_ok()
                    } else {
                        let mut expiry = self.worker.waits.idle_expiry(self.config.timeouts.client_idle);
                        // Still idle after some 50 ms: the connection
                        // leaves this task for a parked one (`parked.rs`).
                        let park = self.worker.waits.park_expiry();
                        monoio::select! {
                            r = self.client.readable(false) => r.is_ok(),
                            _ = &mut expiry => false,
                            _ = park => {
                                if self.worker.is_shutting_down() {
                                    continue;
                                }
                                return Ok(Waited::Park(expiry));
                            }
                        }
                    };
                    if !readable {
                        // The wheel fired because a stop began: the next
                        // turn closes the connection or serves what came.
                        if self.worker.is_shutting_down() && !stopping {
                            continue;
                        }
                        return Ok(Waited::Closed);
                    }
                    // A client that came back quickly is likely to again.
                    self.hot = precise_ms().saturating_sub(since) < HOT_WINDOW_MS;
                    self.read_ready().await
                }
                // Heads that span reads are rare: their timer lives on the heap.
                Some(d) => Box::pin(read_until(&mut self.cbuf, &mut self.client, d)).await,
            };
            match read {
                // First: a timed-out read took the buffer with it.
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(ProxyError::ClientHeaderTimeout),
                Ok(0) | Err(_) if self.cbuf.is_empty() => return Ok(Waited::Closed),
                Ok(0) | Err(_) => return Err(ProxyError::ClientGone),
                Ok(_) => {}
            }
        }
    }
}

impl Session {
    /// One read of request body bytes into `cbuf`, within `client_body`:
    /// the one place a request body is read outside the relay, with the
    /// relay's mapping (a stall is a 408, a close is the client gone).
    pub(super) async fn read_body_bytes(&mut self) -> Result<usize, ProxyError> {
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.req.watch);
        match watch.limit(self.config.timeouts.client_body, self.cbuf.fill(&mut self.client)).await {
            Ok(Ok(n)) if n > 0 => Ok(n),
            Ok(_) => Err(ProxyError::ClientGone),
            Err(_) => Err(ProxyError::ClientBodyTimeout),
        }
    }

    /// Sends `100 Continue` when the client asked for it and has sent no
    /// body byte yet (the `Expect` field itself is not forwarded).
    pub(super) async fn send_continue(&mut self, x: Exchange) -> Result<(), ProxyError> {
        if x.expect_continue && self.cbuf.is_empty() {
            self.out.clear();
            self.out.extend_from_slice(CONTINUE);
            self.send_out().await?;
        }
        Ok(())
    }

    /// The read after the client's bytes were seen (by a poll, or by the
    /// parked task). Plain bytes are read at once. A TLS record may still
    /// be incomplete, so that read is bounded by `client_header`: a client
    /// that sends one byte of a record must not hold the connection past
    /// every deadline.
    async fn read_ready(&mut self) -> std::io::Result<usize> {
        lend_storage(&self.worker, &mut self.cbuf, self.config.runtime.read_buffer);
        if self.client.tls().is_some() {
            let deadline = Instant::now() + self.config.timeouts.client_header;
            Box::pin(read_until(&mut self.cbuf, &mut self.client, deadline)).await
        } else {
            self.cbuf.fill(&mut self.client).await
        }
    }

    /// A hot wait for the next request: one read, holding the buffers, for
    /// a new connection (whose request is usually already on its way) and
    /// for one whose client came back within `HOT_WINDOW_MS` last time.
    /// This saves the readiness poll of the idle path, one ring operation
    /// per request. The read is cancelled, not dropped, when the window
    /// passes, so no byte it got is lost. `None` when the window passed or
    /// the worker's budget of hot waits is spent: the connection then
    /// waits the idle way.
    async fn hot_read(&mut self) -> Option<std::io::Result<usize>> {
        // The wait after a connection's first request is always a poll:
        // that is where a client that connects, asks once and then idles
        // shows itself without ever pinning buffers.
        let first = self.fresh;
        self.hot = false;
        let expiry = self.worker.waits.begin_hot_wait()?;
        self.shrink_for_hot();
        lend_storage(&self.worker, &mut self.cbuf, self.config.runtime.read_buffer);
        let canceller = self.canceller.take().unwrap_or_default();
        // Boxed: the cancellable read is large, and every connection's task
        // (idle ones included) is as big as its largest inline await.
        let (read, canceller) = Box::pin(hot_fill(&mut self.cbuf, &mut self.client, expiry, canceller)).await;
        self.worker.waits.end_hot_wait();
        self.canceller = Some(canceller);
        self.hot = read.is_some() && !first;
        read
    }
}

/// One read that `expiry` cancels; `None` if it was cancelled before any
/// byte came. Returns the canceller to reuse (a fresh one after a cancel).
async fn hot_fill(
    buf: &mut ConnBuf,
    client: &mut Conn,
    expiry: IdleExpiry,
    canceller: Canceller,
) -> (Option<std::io::Result<usize>>, Canceller) {
    let mut read = std::pin::pin!(buf.fill_cancelable(client, canceller.handle()));
    let mut expiry = std::pin::pin!(expiry);
    monoio::select! {
        r = &mut read => (Some(r), canceller),
        _ = &mut expiry => {
            let fresh = canceller.cancel();
            match read.await {
                Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (None, fresh),
                r => (Some(r), fresh),
            }
        }
    }
}

/// One read that must end by `deadline` (`TimedOut` if it does not).
async fn read_until(buf: &mut ConnBuf, client: &mut Conn, deadline: Instant) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    match timeout(left, buf.fill(client)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads and drops what the client still sends, for up to `LINGER`.
async fn linger(buf: &mut ConnBuf, client: &mut Conn) {
    let until = Instant::now() + LINGER;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match timeout(left, buf.fill(client)).await {
            Ok(Ok(n)) if n > 0 => buf.clear(),
            _ => break,
        }
    }
}

/// Gives `buf` storage from the worker's pool if it has none: an idle
/// connection holds no buffer, so each wait or exchange borrows one.
pub(super) fn lend_storage(worker: &Worker, buf: &mut ConnBuf, size: usize) {
    if !buf.has_storage() {
        let _ = buf.switch_to(worker.take_buf(size));
    }
}
