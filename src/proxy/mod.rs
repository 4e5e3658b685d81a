//! The per-connection loop: read a request head, route it, answer locally
//! or forward it over a pooled upstream connection, relay both bodies, and
//! decide whether both connections stay open. One `Session` per accepted
//! client connection, on the worker that accepted it.
//!
//! # Lifecycle
//!
//! Before the first request, a connection of a listener with a PROXY
//! header, TLS or `mode = "tcp"` goes through `accept.rs` `serve`: the
//! PROXY header (`proxy_protocol`, from `trusted` peers), the TLS handshake
//! (`handshake.rs`), then a `Session` or a TCP relay (`crate::tcp_proxy`).
//! A plaintext HTTP listener's connections start as a `Session` directly.
//!
//! A `Session` holds what lives as long as the connection (the client
//! stream, its read buffer, reused scratch buffers, the hot/idle wait
//! state). Each request gets a fresh `RequestState` (`request_state.rs`),
//! and goes through these phases, one function each:
//!
//! | phase | where | what |
//! |---|---|---|
//! | wait | `client.rs` `read_head` | hot read, or idle poll without buffers; the head's total deadline (`client_header`), early refusal of impossible bytes |
//! | route | `routing.rs` `prepare` | parse and validate the head, normalize and match the path, write the upstream head |
//! | answer locally | `local.rs` `answer_locally` | a route's status; drain a small body or close |
//! | choose and retry | `retry.rs` `proxy` | the balancer's order, `max_conns` queue, retry budget and deadline |
//! | send | `send.rs` `send_request` | head and body upstream, watching for an early response |
//! | receive | `forward.rs` `receive` | response head (1xx relayed), body relay, pool check-in decision |
//! | tunnel | `tunnel.rs` `run` | after a `101`: bytes both ways until a close or `tunnel_idle` |
//! | fail | `local.rs` `answer_error` | one status per error (`error.rs`), if nothing was sent yet |
//! | count | `mod.rs` `finish` | metrics, access log (`log_fields.rs`), the watchdog slot given back |
//!
//! Then the connection waits for the next request, closes (lingering over
//! unread bytes, `client.rs` `close`), or becomes a tunnel. A wait that
//! lasts 40-60 ms parks the connection: the session's task ends and a small
//! one (`parked.rs`) waits for the next bytes, then starts a new session. Every time
//! limit and where it is enforced is listed in `docs/architecture.md`
//! ("Time limits").

mod body;
mod client;
mod parked;

mod accept;
mod error;
mod forward;
mod handshake;
mod local;
mod log_fields;
mod request_state;
mod retry;
mod routing;
mod send;
pub(crate) mod tunnel;

pub use crate::conn::Conn;
pub use accept::{needs_preamble, serve};
pub use error::{ProxyError, Retry, Side};
pub use local::reason;
pub use tunnel::Relayed;

use crate::http::head::HeadScanner;
use crate::http::request::Method;
use crate::http::request_line::RequestLineCheck;
use crate::http::BodyKind;
use crate::io_buf::ConnBuf;
use crate::runtime::{Snapshot, Worker};
use client::Waited;
use monoio::io::Canceller;
use request_state::RequestState;
use routing::IpText;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a closing connection keeps reading unread client bytes, so the
/// kernel does not answer them with a reset that destroys our response.
const LINGER: Duration = Duration::from_millis(500);

/// Status recorded for a request whose client went away before any answer
/// (nginx's convention).
const CLIENT_CLOSED: u16 = 499;
/// Scratch buffers bigger than this go back to the worker between requests.
const KEEP_SCRATCH_BYTES: usize = 2048;

/// What the rest of an exchange needs from the request head, copied out so
/// the borrow of the read buffer can end.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    method: Method,
    http10: bool,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    /// The hash of the balancing key (hash mode), else 0.
    key_hash: u64,
    /// The body is small and the method idempotent: buffer it so the
    /// request can be sent again.
    replay: bool,
    action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Local(u16),
    Proxy(usize),
    /// 308 to HTTPS; the `Location` is in `uhead`.
    Redirect,
}

/// How an exchange left the client connection.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: relay bytes over this connection.
    Upgrade(Conn),
}

/// One client connection and the request in progress on it (see the
/// lifecycle above).
pub struct Session {
    /// The worker this connection runs on: its pools, metrics, watchdog,
    /// and the buffers idle connections lend back.
    worker: Rc<Worker>,
    /// The snapshot this request runs on (refreshed between requests).
    config: Rc<Snapshot>,
    /// The listener that accepted the connection (its routes and labels).
    listener: Arc<str>,
    /// The client's connection.
    client: Conn,
    /// The client's address, for logs and hash balancing.
    peer: SocketAddr,
    /// The client's IP as text, for X-Forwarded-For (formatted once).
    peer_text: IpText,
    /// Bytes read from the client: request heads and bodies.
    cbuf: ConnBuf,
    /// Bytes read from the upstream: response heads and bodies.
    ubuf: ConnBuf,
    /// Head for the upstream, kept until the exchange ends so a safe retry
    /// can send it again.
    uhead: Vec<u8>,
    /// Everything else written: response heads, re-encoded chunks.
    out: Vec<u8>,
    /// The current request's normalized path (routed and forwarded).
    path: Vec<u8>,
    /// Finds the end of a head across reads, resuming where it stopped.
    scanner: HeadScanner,
    /// Refuses a request line at its first impossible byte.
    line_check: RequestLineCheck,
    /// The request in progress (fresh for each one).
    req: RequestState,
    /// Method, target, Referer and User-Agent of the current request, kept
    /// only when access logging is on (offsets in `req.log_marks`).
    log_req: Vec<u8>,
    /// The protocols of the current request's `Upgrade` offer that were
    /// forwarded, comma-separated (empty if none).
    upgrade_offer: Vec<u8>,
    /// A buffered request body that can be sent again (see `retry`).
    replay: Vec<u8>,
    /// The current request's server order (reused buffer).
    plan: Vec<usize>,
    /// Believe the client's own forwarding fields (`X-Forwarded-For` and
    /// the like): it is in the listener's `trusted`, or `[http] forwarded
    /// = "append"`. Decided once per connection.
    believe_forwarded: bool,
    /// Wait for the next request with a hot read (see `read_head`).
    hot: bool,
    /// No request head has been read on this connection yet: its first
    /// wait is hot, and a graceful stop lets it ask (see `read_head`).
    fresh: bool,
    /// Resumed from parking because the client's bytes arrived: the next
    /// wait reads at once (no hot wait, no second poll).
    woken: bool,
    /// Cancels a hot read whose window passed; kept between hot reads.
    canceller: Option<Canceller>,
}

impl Session {
    /// A session for a connection `listener` accepted from `peer`.
    pub fn new(worker: Rc<Worker>, listener: Arc<str>, client: Conn, peer: SocketAddr) -> Self {
        worker.metrics.borrow_mut().connection_opened(&listener);
        worker.connection_opened();
        Session::counted(worker, listener, client, peer)
    }

    /// `new` for a connection already counted as open (a TLS one, counted
    /// from its accept, handshake included).
    fn counted(worker: Rc<Worker>, listener: Arc<str>, client: Conn, peer: SocketAddr) -> Self {
        let config = worker.config();
        let (rb, max_head) = (config.runtime.read_buffer, config.limits.max_header_bytes + 1);
        let believe_forwarded = config.http.forwarded == crate::config::Forwarding::Append
            || config.listeners.iter().any(|l| l.name == listener && l.trusts(peer.ip()));
        Session {
            believe_forwarded,
            config,
            listener,
            client,
            peer_text: IpText::new(peer.ip()),
            peer,
            cbuf: ConnBuf::unallocated(max_head.max(rb)),
            ubuf: ConnBuf::unallocated(max_head.max(rb)),
            uhead: Vec::new(),
            out: Vec::new(),
            path: Vec::new(),
            scanner: HeadScanner::default(),
            line_check: RequestLineCheck::default(),
            req: RequestState::default(),
            log_req: Vec::new(),
            upgrade_offer: Vec::new(),
            replay: Vec::new(),
            plan: Vec::new(),
            hot: true,
            fresh: true,
            woken: false,
            canceller: None,
            worker,
        }
    }

    /// Serves requests until the connection closes, parks (`parked.rs`)
    /// or becomes a tunnel. Not an `async fn`: its argument would be stored
    /// twice in the future (as the argument and as the local it is moved
    /// to), and every connection's task is as large as this future.
    #[allow(clippy::manual_async_fn)] // see above: the size is the point
    pub fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            loop {
                self.config = self.worker.config();
                self.req = RequestState::default();
                self.log_req.clear();
                let head_len = match self.read_head().await {
                    Ok(Waited::Closed) => break,
                    Ok(Waited::Park(expiry)) => return self.park(expiry),
                    Ok(Waited::Head(n)) => {
                        self.fresh = false;
                        n
                    }
                    Err(e) => {
                        self.keep_line_for_log();
                        self.req.watch = Some(self.worker.request_started());
                        let started = Instant::now();
                        Box::pin(self.answer_error(e)).await;
                        self.finish(started);
                        break;
                    }
                };
                // A reload while this connection idled applies to this request.
                self.config = self.worker.config();
                self.equip();
                self.req.watch = Some(self.worker.request_started());
                let started = Instant::now();
                let result = match self.prepare(head_len) {
                    Ok(x) => {
                        self.cbuf.consume(head_len);
                        // Boxed: the exchange's state is large, and an idle
                        // connection's task should only be as big as its wait.
                        Box::pin(self.exchange(x)).await
                    }
                    Err(e) => {
                        self.keep_line_for_log();
                        Err(e)
                    }
                };
                let next = match result {
                    Ok(next) => next,
                    Err(e) => {
                        Box::pin(self.answer_error(e)).await;
                        Next::Close
                    }
                };
                self.finish(started);
                match next {
                    Next::KeepAlive => continue,
                    Next::Close => break,
                    Next::Upgrade(upstream) => {
                        self.worker.metrics.borrow_mut().connection_closed(&self.listener);
                        self.worker.connection_closed();
                        // Boxed, and the session moved into it: the tunnel's
                        // state is not part of every connection's task.
                        return Box::pin(self.into_tunnel(upstream)).await;
                    }
                }
            }
            self.close().await;
            // The next connection reuses the buffers instead of allocating (and
            // growing) its own: this is most of a short connection's malloc work.
            self.shrink_for_idle();
            self.worker.metrics.borrow_mut().connection_closed(&self.listener);
            self.worker.connection_closed();
        }
    }

    /// Becomes a tunnel over the client connection and `upstream`.
    async fn into_tunnel(self, upstream: Conn) {
        let Session { client, cbuf, ubuf, config, .. } = self;
        tunnel::run(client, cbuf, upstream, ubuf, config.timeouts.tunnel_idle).await;
    }

    /// Counts the request that just ended.
    fn finish(&mut self, started: Instant) {
        // Given back now: a stale slot could time another request's I/O.
        if let Some(slot) = self.req.watch.take() {
            self.worker.request_finished(slot);
        }
        let config = Rc::clone(&self.config);
        let Some(listener) = config.listeners.iter().find(|l| l.name == self.listener) else {
            return;
        };
        let route = if self.req.routed { listener.routes.lookup(&self.path) } else { None };
        let labels = route.map_or(&listener.no_route, |(r, _)| &r.labels);
        let now = Instant::now();
        let micros = u64::try_from(now.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX);
        self.worker.metrics.borrow_mut().request(labels, self.req.status, micros);
        if self.worker.logs_access() {
            self.log_request(now, started, &labels.route);
        }
    }

    async fn exchange(&mut self, x: Exchange) -> Result<Next, ProxyError> {
        match x.action {
            Action::Local(status) => self.answer_locally(status, x).await,
            Action::Redirect => self.answer_locally(308, x).await,
            Action::Proxy(upstream) => self.proxy(upstream, x).await,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Upstream => "upstream",
        Side::Internal => "internal",
    }
}

#[cfg(test)]
mod size_tests {
    fn future_size<A, F: FnOnce(A) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn layout2<A, B, F: FnOnce(A, B) -> Fut, Fut>(_: F) -> (usize, usize) {
        (std::mem::size_of::<Fut>(), std::mem::align_of::<Fut>())
    }

    fn layout4<A, B, C, D, F: FnOnce(A, B, C, D) -> Fut, Fut>(_: F) -> (usize, usize) {
        (std::mem::size_of::<Fut>(), std::mem::align_of::<Fut>())
    }

    /// Largest block glibc serves from its per-thread cache (tcache).
    const TCACHE_MAX_BYTES: usize = 1032;

    /// The exchange and the upstream attempt inside it are boxed per
    /// request. Each must stay within glibc's tcache and at 16-byte
    /// alignment: a larger block goes through the small bins, and an
    /// over-aligned one (monoio's timer entries are 128-byte aligned)
    /// through `posix_memalign`'s slow path, on every request.
    #[test]
    fn the_per_request_boxes_take_mallocs_fast_path() {
        for (name, (size, align)) in [
            ("Session::exchange", layout2(super::Session::exchange)),
            ("Session::forward", layout4(super::Session::forward)),
        ] {
            assert!(align <= 16, "{name} future is {align}-byte aligned; box the timer inside it");
            assert!(size <= TCACHE_MAX_BYTES, "{name} future grew to {size} bytes; box a large part of it");
        }
    }

    /// Every connection's task is as large as this future while it is
    /// mid-request or idle for under 40-60 ms; a connection that idles
    /// longer parks in a much smaller task (`parked.rs`).
    #[test]
    fn a_connection_task_stays_small() {
        let run = future_size(super::Session::run);
        assert!(run <= 1024, "Session::run future grew to {run} bytes; box the new large path");
    }
}
