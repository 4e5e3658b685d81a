//! The per-connection loop: read a request head, route it, answer locally
//! or forward it over a pooled upstream connection, relay both bodies, and
//! decide whether both connections stay open. One `Session` per accepted
//! client connection, on the worker that accepted it.

mod body;
mod client;
mod error;
mod local;
mod log_fields;
mod retry;
mod send;
mod tunnel;
mod upstream;

pub use error::{ProxyError, Retry, Side};
pub use local::reason;

use crate::config::{PathParams, RouteAction, MAX_HEADERS_CEILING};
use crate::http::head::HeadScanner;
use crate::http::headers::list_items;
use crate::http::path::{has_params, normalize_path};
use crate::http::request::{self, Method, RequestError};
use crate::http::request_line::RequestLineCheck;
use crate::http::BodyKind;
use crate::io_buf::{write_out, ConnBuf};
use crate::runtime::{Snapshot, Worker};
use crate::upstream::{hash_bytes, Balance, HashKey};
use monoio::io::Canceller;
use monoio::net::TcpStream;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest body we read and discard to keep a connection open after a
/// local answer; a larger declared body closes the connection instead.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
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
}

/// How an exchange left the client connection.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: relay bytes over this connection.
    Upgrade(TcpStream),
}

pub struct Session {
    worker: Rc<Worker>,
    /// The snapshot this request runs on (refreshed between requests).
    config: Rc<Snapshot>,
    listener: Arc<str>,
    client: TcpStream,
    peer: SocketAddr,
    /// The client's IP as text, for X-Forwarded-For (formatted once).
    peer_text: IpText,
    cbuf: ConnBuf,
    ubuf: ConnBuf,
    /// Head for the upstream, kept until the exchange ends so a safe retry
    /// can send it again.
    uhead: Vec<u8>,
    /// Everything else written: response heads, re-encoded chunks.
    out: Vec<u8>,
    path: Vec<u8>,
    scanner: HeadScanner,
    /// Refuses a request line at its first impossible byte.
    line_check: RequestLineCheck,
    response_started: bool,
    /// Status sent (or to record) for the current request.
    status: u16,
    /// Whether `path` holds the current request's routed path (labels are
    /// looked up again at the end rather than cloned per request).
    routed: bool,
    /// Response body bytes sent for the current request.
    bytes_sent: u64,
    /// The server that answered the current request.
    upstream_addr: Option<SocketAddr>,
    /// Method, target, Referer and User-Agent of the current request, kept
    /// only when access logging is on; `log_marks` are their end offsets.
    log_req: Vec<u8>,
    log_marks: [usize; 4],
    http10: bool,
    /// When the current request's first bytes were seen, if its head
    /// spanned reads (its `client_header` deadline runs from here).
    head_began: Option<Instant>,
    /// The `Upgrade` value the current request offered (empty if none).
    upgrade_offer: Vec<u8>,
    /// A buffered request body that can be sent again (see `retry`).
    replay: Vec<u8>,
    /// The current request's server order (reused buffer).
    plan: Vec<usize>,
    /// A response went out before the request body was read to its end
    /// (see `send`): the connection closes, lingering over the rest.
    body_unread: bool,
    /// Wait for the next request with a hot read (see `read_head`).
    hot: bool,
    /// No request head has been read on this connection yet: its first
    /// wait is hot, and a graceful stop lets it ask (see `read_head`).
    fresh: bool,
    /// Cancels a hot read whose window passed; kept between hot reads.
    canceller: Option<Canceller>,
    /// The watchdog slot that times the I/O of the request in flight;
    /// `usize::MAX` between requests, when no operation may be timed.
    watch_slot: usize,
}

impl Session {
    pub fn new(worker: Rc<Worker>, listener: Arc<str>, client: TcpStream, peer: SocketAddr) -> Self {
        let config = worker.config();
        let (rb, max_head) = (config.runtime.read_buffer, config.limits.max_header_bytes + 1);
        worker.metrics.borrow_mut().connection_opened(&listener);
        worker.connection_opened();
        Session {
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
            response_started: false,
            status: 0,
            routed: false,
            bytes_sent: 0,
            upstream_addr: None,
            log_req: Vec::new(),
            log_marks: [0; 4],
            http10: false,
            head_began: None,
            upgrade_offer: Vec::new(),
            replay: Vec::new(),
            plan: Vec::new(),
            body_unread: false,
            hot: true,
            fresh: true,
            canceller: None,
            watch_slot: usize::MAX,
            worker,
        }
    }

    pub async fn run(mut self) {
        loop {
            self.config = self.worker.config();
            self.response_started = false;
            self.status = 0;
            self.routed = false;
            self.bytes_sent = 0;
            self.upstream_addr = None;
            self.log_req.clear();
            self.log_marks = [0; 4];
            self.http10 = false;
            let head_len = match self.read_head().await {
                Ok(None) => break,
                Ok(Some(n)) => {
                    self.fresh = false;
                    n
                }
                Err(e) => {
                    self.keep_line_for_log();
                    self.watch_slot = self.worker.request_started();
                    let started = Instant::now();
                    Box::pin(self.answer_error(e)).await;
                    self.finish(started);
                    break;
                }
            };
            // A reload while this connection idled applies to this request.
            self.config = self.worker.config();
            self.equip();
            self.watch_slot = self.worker.request_started();
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
                    let Session { client, cbuf, ubuf, config, .. } = self;
                    return Box::pin(tunnel::run(client, cbuf, upstream, ubuf, config.timeouts.tunnel_idle)).await;
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

    /// Answers a failed request with its status, if nothing was sent yet.
    async fn answer_error(&mut self, e: ProxyError) {
        log::debug!("{} side failed for {}: {e:?}", side_name(e.side()), self.peer);
        match (self.response_started, e.status()) {
            (false, Some(status)) => {
                self.status = status;
                self.bytes_sent = local::write_status(status, false, false, &mut self.out);
                let send = self.config.timeouts.client_send;
                let worker = Rc::clone(&self.worker);
                let _ = worker
                    .watchdog
                    .watch(self.watch_slot)
                    .limit(send, write_out(&mut self.client, &mut self.out))
                    .await;
            }
            (false, None) => self.status = CLIENT_CLOSED,
            (true, _) => {}
        }
    }

    /// Counts the request that just ended.
    fn finish(&mut self, started: Instant) {
        // A stale slot key could time another request's I/O: drop it now.
        self.worker.request_finished(std::mem::replace(&mut self.watch_slot, usize::MAX));
        let config = Rc::clone(&self.config);
        let Some(listener) = config.listeners.iter().find(|l| l.name == self.listener) else {
            return;
        };
        let route = if self.routed { listener.routes.lookup(&self.path) } else { None };
        let labels = route.map_or(&listener.no_route, |(r, _)| &r.labels);
        let now = Instant::now();
        let micros = u64::try_from(now.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX);
        self.worker.metrics.borrow_mut().request(labels, self.status, micros);
        if self.worker.logs_access() {
            self.log_request(now, started, &labels.route);
        }
    }

    /// Validates and routes the buffered head; for a proxied request also
    /// writes the upstream head into `uhead`.
    fn prepare(&mut self, head_len: usize) -> Result<Exchange, ProxyError> {
        let config = Rc::clone(&self.config);
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
        let req = request::parse(&self.cbuf.data()[..head_len], &mut slots, &config.limits, &config.http)
            .map_err(ProxyError::Request)?;
        self.http10 = req.http10;
        self.upgrade_offer.clear();
        if req.connection.upgrade
            && req.upgrade.is_none()
            && req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            self.worker.metrics.borrow_mut().edge.upgrades_stripped += 1;
        }
        if let Some(offer) = req.upgrade {
            // Only what is forwarded: a 101 to anything else is refused.
            for p in list_items(offer).filter(|p| config.http.allows_upgrade(p)) {
                self.upgrade_offer.extend_from_slice(p);
                self.upgrade_offer.push(b',');
            }
        }
        if self.worker.logs_access() {
            let (mut log_req, mut marks) = (std::mem::take(&mut self.log_req), [0; 4]);
            log_fields::keep_for_log(&req, &mut log_req, &mut marks);
            self.log_req = log_req;
            self.log_marks = marks;
        }
        let asterisk = req.path == b"*";
        if asterisk {
            self.path.clear();
            self.path.push(b'/');
        } else {
            if config.http.path_params == PathParams::Refuse && has_params(req.path) {
                return Err(ProxyError::Request(RequestError::BadRequest("path parameter (`;`) refused")));
            }
            normalize_path(req.path, &mut self.path)
                .map_err(|_| ProxyError::Request(RequestError::BadRequest("path cannot be normalized")))?;
        }
        let listener = config
            .listeners
            .iter()
            .find(|l| l.name == self.listener)
            // The listener left the config in a reload; its sockets are closed.
            .ok_or(ProxyError::ListenerGone)?;
        let (mut key_hash, mut replay) = (0, false);
        let route = listener.routes.lookup(&self.path);
        self.routed = true;
        let action = match route.map(|(r, m)| (&r.action, m)) {
            None => Action::Local(404),
            Some((RouteAction::Status(s), _)) => Action::Local(*s),
            Some((RouteAction::Proxy { upstream, strip_prefix }, matched)) => {
                let path: &[u8] = match (asterisk, strip_prefix) {
                    (true, _) => b"*",
                    (false, true) if self.path.len() > matched => &self.path[matched..],
                    (false, true) => b"/",
                    (false, false) => &self.path,
                };
                let dropped =
                    request::write_upstream_head(&req, path, self.peer_text.as_bytes(), &config.http, &mut self.uhead);
                if dropped > 0 {
                    self.worker.metrics.borrow_mut().edge.underscored_dropped += dropped as u64;
                }
                let up = &config.upstreams[*upstream];
                key_hash = match &up.policy.balance {
                    Balance::Hash(key) => balance_key(key, &req, self.peer),
                    _ => 0,
                };
                replay = matches!(req.body, BodyKind::Length(n) if n <= retry::REPLAY_BODY_MAX)
                    && req.method.is_idempotent();
                Action::Proxy(*upstream)
            }
        };
        Ok(Exchange {
            method: req.method,
            http10: req.http10,
            body: req.body,
            keep_alive: req.keep_alive && !self.worker.is_shutting_down(),
            expect_continue: req.expect_continue,
            upgrade: req.upgrade.is_some(),
            key_hash,
            replay,
            action,
        })
    }

    async fn exchange(&mut self, x: Exchange) -> Result<Next, ProxyError> {
        match x.action {
            Action::Local(status) => self.answer_locally(status, x).await,
            Action::Proxy(upstream) => self.proxy(upstream, x).await,
        }
    }

    /// Answers with a status of our own. The request body must not be
    /// parsed as the next request: it is read and dropped when small,
    /// otherwise the connection closes after the answer.
    async fn answer_locally(&mut self, status: u16, x: Exchange) -> Result<Next, ProxyError> {
        let mut keep = x.keep_alive && !self.worker.is_shutting_down();
        match x.body {
            BodyKind::None => {}
            BodyKind::Length(n) if n <= DRAIN_MAX_BYTES && !x.expect_continue => {
                keep &= self.drain(n).await.is_ok();
            }
            _ => keep = false,
        }
        self.bytes_sent = local::write_status(status, keep, x.method == Method::Head, &mut self.out);
        self.response_started = true;
        self.status = status;
        let send = self.config.timeouts.client_send;
        let worker = Rc::clone(&self.worker);
        match worker.watchdog.watch(self.watch_slot).limit(send, write_out(&mut self.client, &mut self.out)).await {
            Ok(Ok(())) if keep => Ok(Next::KeepAlive),
            Ok(Ok(())) => Ok(Next::Close),
            _ => Err(ProxyError::ClientGone),
        }
    }

    async fn drain(&mut self, mut left: u64) -> Result<(), ProxyError> {
        let idle = self.config.timeouts.client_body;
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.watch_slot);
        while left > 0 {
            if self.cbuf.is_empty() {
                match watch.limit(idle, self.cbuf.fill(&mut self.client)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(ProxyError::ClientGone),
                }
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(self.cbuf.len());
            self.cbuf.consume(k);
            left -= k as u64;
        }
        Ok(())
    }
}

/// An IP address as text, stored inline (the longest IPv6 text is 45 bytes).
struct IpText {
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    fn new(ip: std::net::IpAddr) -> Self {
        use std::io::Write;
        let mut bytes = [0u8; 45];
        let mut cursor = &mut bytes[..];
        // Cannot fail: every IP address fits in 45 bytes.
        let _ = write!(cursor, "{ip}");
        let len = 45 - cursor.len();
        IpText { bytes, len: len as u8 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The hash of a request's balancing key; a missing header or cookie
/// hashes as empty, so such requests share one server.
fn balance_key(key: &HashKey, req: &request::Request<'_, '_>, peer: SocketAddr) -> u64 {
    match key {
        HashKey::ClientIp => match peer.ip() {
            std::net::IpAddr::V4(a) => hash_bytes(&a.octets()),
            std::net::IpAddr::V6(a) => hash_bytes(&a.octets()),
        },
        HashKey::Header(name) => {
            hash_bytes(req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map_or(&[][..], |h| h.value))
        }
        HashKey::Cookie(name) => {
            let value = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
                .flat_map(|h| h.value.split(|&b| b == b';'))
                .filter_map(|pair| {
                    let pair = crate::http::headers::trim_ows(pair);
                    let eq = pair.iter().position(|&b| b == b'=')?;
                    (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
                })
                .next();
            hash_bytes(value.unwrap_or_default())
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

    /// Every connection's task is as large as this future, idle or not; the
    /// idle-memory target (2 KiB per connection in all) depends on it.
    #[test]
    fn a_connection_task_stays_small() {
        let run = future_size(super::Session::run);
        assert!(run <= 1536, "Session::run future grew to {run} bytes; box the new large path");
    }
}
