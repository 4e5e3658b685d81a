//! The proxy's error boundary: every failure names the side that failed and
//! maps to exactly one status code (or none, when no answer can be sent)
//! and one retry decision.

use super::body::RelayError;
use crate::http::chunked::ChunkError;
use crate::http::request::RequestError;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: what it sent, or how it read.
    Client,
    /// The upstream server: connecting, what it answered, or how it read.
    Upstream,
    /// The proxy itself (its configuration changed under the connection).
    Internal,
}

/// Whether another attempt may be made for the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the failure may have reached the server, or is the client's.
    No,
    /// Nothing reached the upstream: any method may go to the next server.
    NextServer,
    /// The connection died before any response byte: an idempotent request
    /// whose body can be sent again may go to the next server (or, when a
    /// pooled connection was stale, once more on a fresh one).
    IfReplayable,
    /// Timed out: like `IfReplayable`, but only where the upstream opts in
    /// with `retry_on_timeout` (a hung backend would otherwise be hit once
    /// per server).
    IfReplayableOnTimeout,
}

/// Why a request failed: one variant per cause, each with one side, one
/// status and one retry decision (the methods below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The request head was refused.
    Request(RequestError),
    /// The head did not arrive within `client_header`.
    ClientHeaderTimeout,
    /// The client stalled mid-body (`client_body`).
    ClientBodyTimeout,
    /// The client stopped reading what we wrote (`client_send`).
    ClientSendTimeout,
    /// The client closed or reset; nobody is left to answer.
    ClientGone,
    /// The client's chunked body was malformed.
    ClientBody(ChunkError),
    /// The client's body exceeded `max_body_bytes`.
    ClientBodyTooLarge,
    /// No connection to the server could be made.
    Connect,
    /// The upstream did not answer within `upstream_response`.
    UpstreamTimeout,
    /// The upstream stopped reading the request (`upstream_send`). Never
    /// retried: the request bytes went down with the write that timed out,
    /// and part of them may have reached the server.
    UpstreamSendTimeout,
    /// The upstream closed or reset; `reused` says the connection came
    /// from the pool, `answered` whether any response byte had arrived.
    UpstreamGone {
        /// The connection came from the pool.
        reused: bool,
        /// A response byte had arrived.
        answered: bool,
    },
    /// The upstream sent something that is not a valid response.
    BadResponse(&'static str),
    /// The upstream's chunked body was malformed.
    UpstreamBody(ChunkError),
    /// Every server of the upstream is out of rotation (drained).
    NoServer,
    /// The connection's listener was removed by a reload.
    ListenerGone,
}

impl ProxyError {
    /// The side whose failure this is (passive health counts only the
    /// upstream's).
    pub fn side(self) -> Side {
        match self {
            ProxyError::Request(_)
            | ProxyError::ClientHeaderTimeout
            | ProxyError::ClientBodyTimeout
            | ProxyError::ClientSendTimeout
            | ProxyError::ClientGone
            | ProxyError::ClientBody(_)
            | ProxyError::ClientBodyTooLarge => Side::Client,
            ProxyError::Connect
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamSendTimeout
            | ProxyError::UpstreamGone { .. }
            | ProxyError::BadResponse(_)
            | ProxyError::UpstreamBody(_)
            | ProxyError::NoServer => Side::Upstream,
            ProxyError::ListenerGone => Side::Internal,
        }
    }

    /// The status to answer with, if no response byte has been sent yet.
    pub fn status(self) -> Option<u16> {
        match self {
            ProxyError::Request(e) => Some(e.status()),
            ProxyError::ClientHeaderTimeout => Some(408),
            ProxyError::ClientBodyTimeout => Some(408),
            ProxyError::ClientSendTimeout | ProxyError::ClientGone => None,
            ProxyError::ClientBody(_) => Some(400),
            ProxyError::ClientBodyTooLarge => Some(413),
            ProxyError::Connect
            | ProxyError::UpstreamGone { .. }
            | ProxyError::BadResponse(_)
            | ProxyError::UpstreamBody(_) => Some(502),
            ProxyError::UpstreamTimeout | ProxyError::UpstreamSendTimeout => Some(504),
            ProxyError::NoServer | ProxyError::ListenerGone => Some(503),
        }
    }

    /// A request body relay's failure (client to upstream).
    pub(super) fn from_request_relay(e: RelayError, reused: bool) -> Self {
        match e {
            RelayError::SrcIo | RelayError::SrcEof => ProxyError::ClientGone,
            RelayError::SrcTimeout => ProxyError::ClientBodyTimeout,
            RelayError::SrcFraming(c) => ProxyError::ClientBody(c),
            RelayError::TooLarge => ProxyError::ClientBodyTooLarge,
            RelayError::DstIo => ProxyError::UpstreamGone { reused, answered: false },
            RelayError::DstTimeout => ProxyError::UpstreamSendTimeout,
        }
    }

    /// A response body relay's failure (upstream to client). Responses
    /// have no size cap, so `TooLarge` cannot come from one; it maps to
    /// the upstream's fault if a cap is ever set.
    pub(super) fn from_response_relay(e: RelayError, reused: bool) -> Self {
        match e {
            RelayError::SrcIo | RelayError::SrcEof => ProxyError::UpstreamGone { reused, answered: true },
            RelayError::SrcTimeout => ProxyError::UpstreamTimeout,
            RelayError::SrcFraming(c) => ProxyError::UpstreamBody(c),
            RelayError::TooLarge => ProxyError::BadResponse("body over the limit"),
            RelayError::DstIo | RelayError::DstTimeout => ProxyError::ClientGone,
        }
    }

    /// Whether another attempt may be made (see `Retry`).
    pub fn retry(self) -> Retry {
        match self {
            ProxyError::Connect => Retry::NextServer,
            ProxyError::UpstreamGone { answered: false, .. } => Retry::IfReplayable,
            ProxyError::UpstreamTimeout => Retry::IfReplayableOnTimeout,
            _ => Retry::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_and_side() {
        assert_eq!(ProxyError::Request(RequestError::TooManyHeaders).status(), Some(431));
        assert_eq!(ProxyError::ClientHeaderTimeout.status(), Some(408));
        assert_eq!(ProxyError::UpstreamTimeout.status(), Some(504));
        assert_eq!(ProxyError::UpstreamSendTimeout.status(), Some(504));
        assert_eq!(ProxyError::UpstreamSendTimeout.side(), Side::Upstream);
        assert_eq!(ProxyError::Connect.side(), Side::Upstream);
        assert_eq!(ProxyError::ClientGone.status(), None);
        assert_eq!(ProxyError::ClientBodyTimeout.status(), Some(408));
        assert_eq!(ProxyError::ClientSendTimeout.status(), None);
        assert_eq!(ProxyError::ClientBody(ChunkError::BadSize).side(), Side::Client);
    }

    #[test]
    fn only_safe_failures_retry() {
        assert_eq!(ProxyError::Connect.retry(), Retry::NextServer);
        assert_eq!(ProxyError::UpstreamGone { reused: true, answered: false }.retry(), Retry::IfReplayable);
        assert_eq!(ProxyError::UpstreamGone { reused: false, answered: false }.retry(), Retry::IfReplayable);
        assert_eq!(ProxyError::UpstreamGone { reused: true, answered: true }.retry(), Retry::No);
        assert_eq!(ProxyError::UpstreamTimeout.retry(), Retry::IfReplayableOnTimeout);
        assert_eq!(ProxyError::UpstreamSendTimeout.retry(), Retry::No);
        assert_eq!(ProxyError::ClientGone.retry(), Retry::No);
        assert_eq!(ProxyError::BadResponse("x").retry(), Retry::No);
    }
}
