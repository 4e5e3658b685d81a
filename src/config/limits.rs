//! Building `[limits]` (sizes a request may have) and `[timeouts]` (how long
//! each wait of a connection may last), with their defaults.

use super::raw::{RawLimits, RawTimeouts};
use super::{Builder, ConfigError};
use std::time::Duration;
use toml::Spanned;

/// Largest request or response head, in bytes (431 / 502 beyond).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one head (431 beyond).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Hard ceiling for `max_headers`: the parser's field array lives on the stack.
pub const MAX_HEADERS_CEILING: usize = 256;
/// Longest request target, in bytes (414 beyond).
pub const DEFAULT_MAX_TARGET_BYTES: usize = 8 * 1024;
/// The whole request head, from its first byte (408 beyond).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive client connection with no request is closed after this.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Each wait for request body bytes (408 beyond).
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Each write to the client.
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to one server; then the next server is tried.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The wait for the response head, and between response body reads (504).
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Each write to the upstream.
pub const DEFAULT_UPSTREAM_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// An upgraded (e.g. WebSocket) connection with no bytes either way is closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A TLS handshake on a listener, from its start (after any PROXY header).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TCP-mode connection with no bytes in either direction is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// `[limits]`: the largest request the proxy accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request or response head, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Longest request target, in bytes.
    pub max_target_bytes: usize,
    /// Largest request body, in bytes; unlimited when `None`.
    pub max_body_bytes: Option<u64>,
}

/// `[timeouts]`: each bounds one kind of wait (see `docs/configuration.md`
/// for what happens when it passes).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole request head, from its first byte.
    pub client_header: Duration,
    /// A keep-alive connection waiting for its next request.
    pub client_idle: Duration,
    /// Each wait for request body bytes.
    pub client_body: Duration,
    /// Each write to the client.
    pub client_send: Duration,
    /// Connecting to one server.
    pub upstream_connect: Duration,
    /// The wait for the response head, and between response body reads.
    pub upstream_response: Duration,
    /// Each write to the upstream.
    pub upstream_send: Duration,
    /// An upgraded connection with no bytes in either direction.
    pub tunnel_idle: Duration,
    /// A TLS handshake on a listener, from its start to its end.
    pub tls_handshake: Duration,
    /// A TCP-mode connection idle in both directions.
    pub tcp_idle: Duration,
}

impl Builder<'_> {
    pub(super) fn limits(&self, l: &RawLimits) -> Result<Limits, ConfigError> {
        let bounded = |v: &Option<Spanned<usize>>, key: &str, min: usize, max: usize, default: usize| match v {
            Some(s) if !(min..=max).contains(s.get_ref()) => {
                Err(self.err(s, key, format!("must be from {min} to {max}")))
            }
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        };
        Ok(Limits {
            max_header_bytes: bounded(
                &l.max_header_bytes,
                "limits.max_header_bytes",
                1024,
                1 << 20,
                DEFAULT_MAX_HEADER_BYTES,
            )?,
            max_headers: bounded(&l.max_headers, "limits.max_headers", 1, MAX_HEADERS_CEILING, DEFAULT_MAX_HEADERS)?,
            max_target_bytes: bounded(
                &l.max_target_bytes,
                "limits.max_target_bytes",
                16,
                1 << 20,
                DEFAULT_MAX_TARGET_BYTES,
            )?,
            max_body_bytes: l.max_body_bytes.as_ref().map(|b| *b.get_ref()),
        })
    }

    pub(super) fn timeouts(&self, t: &RawTimeouts) -> Result<Timeouts, ConfigError> {
        let get = |v: &Option<Spanned<String>>, key: &str, default: Duration| match v {
            Some(s) => match self.duration(s, key)? {
                d if d.is_zero() => Err(self.err(s, key, "must be greater than zero")),
                d => Ok(d),
            },
            None => Ok(default),
        };
        Ok(Timeouts {
            client_header: get(&t.client_header, "timeouts.client_header", DEFAULT_CLIENT_HEADER_TIMEOUT)?,
            client_idle: get(&t.client_idle, "timeouts.client_idle", DEFAULT_CLIENT_IDLE_TIMEOUT)?,
            client_body: get(&t.client_body, "timeouts.client_body", DEFAULT_CLIENT_BODY_TIMEOUT)?,
            client_send: get(&t.client_send, "timeouts.client_send", DEFAULT_CLIENT_SEND_TIMEOUT)?,
            upstream_connect: get(&t.upstream_connect, "timeouts.upstream_connect", DEFAULT_UPSTREAM_CONNECT_TIMEOUT)?,
            upstream_response: get(
                &t.upstream_response,
                "timeouts.upstream_response",
                DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
            )?,
            upstream_send: get(&t.upstream_send, "timeouts.upstream_send", DEFAULT_UPSTREAM_SEND_TIMEOUT)?,
            tunnel_idle: get(&t.tunnel_idle, "timeouts.tunnel_idle", DEFAULT_TUNNEL_IDLE_TIMEOUT)?,
            tls_handshake: get(&t.tls_handshake, "timeouts.tls_handshake", DEFAULT_TLS_HANDSHAKE_TIMEOUT)?,
            tcp_idle: get(&t.tcp_idle, "timeouts.tcp_idle", DEFAULT_TCP_IDLE_TIMEOUT)?,
        })
    }
}
