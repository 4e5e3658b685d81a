//! What one request owns: created fresh when the connection starts waiting
//! for a request head and dropped when the next one begins, so nothing of
//! one request (its status, the server that answered, whether an answer
//! began) can leak into the next. Buffers that are reused from request to
//! request for their capacity stay on the `Session`; their contents are
//! rewritten by each request before use.

use crate::runtime::WatchSlot;
use std::net::SocketAddr;
use std::time::Instant;

#[derive(Debug, Default)]
pub(super) struct RequestState {
    /// The watchdog slot that times this request's I/O, from the moment its
    /// head is complete until it is counted (`Session::finish`); `None`
    /// before and after, when no operation may be timed.
    pub(super) watch: Option<WatchSlot>,
    /// Response bytes went to the client: no error page can follow, and no
    /// other server may be tried.
    pub(super) response_started: bool,
    /// The status sent (or to record: 499 for a client that went away).
    pub(super) status: u16,
    /// `Session::path` holds this request's routed path (labels are looked
    /// up again at the end rather than cloned per request).
    pub(super) routed: bool,
    /// Response body bytes sent.
    pub(super) bytes_sent: u64,
    /// The server that answered.
    pub(super) upstream_addr: Option<SocketAddr>,
    /// End offsets of method, target, Referer and User-Agent in
    /// `Session::log_req` (access logging only).
    pub(super) log_marks: [u32; 4],
    /// The request is HTTP/1.0 (framing and keep-alive differ).
    pub(super) http10: bool,
    /// When the head's first bytes were seen, if it spanned reads: its
    /// `client_header` deadline and its logged duration run from here.
    pub(super) head_began: Option<Instant>,
    /// A response went out before the request body was read to its end
    /// (see `send`): the connection closes, lingering over the rest.
    pub(super) body_unread: bool,
    /// The answer is a redirect to HTTPS, its `Location` in
    /// `Session::uhead` (written by the routing phase).
    pub(super) redirect: bool,
}
