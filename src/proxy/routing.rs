//! The routing phase of a request: its complete head is parsed and
//! validated, the path normalized and matched against the listener's
//! routes, and for a proxied request the canonical upstream head written
//! and the balancing key hashed. Synchronous, so the parser's header array
//! never lives in the connection's future.

use super::error::ProxyError;
use super::{log_fields, retry, Action, Exchange, Session};
use crate::config::{PathParams, RouteAction, MAX_HEADERS_CEILING};
use crate::http::headers::list_items;
use crate::http::path::{has_params, normalize_path};
use crate::http::request::{self, RequestError};
use crate::http::BodyKind;
use crate::upstream::{hash_bytes, Balance, HashKey};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;

impl Session {
    /// Validates and routes the buffered head; for a proxied request also
    /// writes the upstream head into `uhead`.
    pub(super) fn prepare(&mut self, head_len: usize) -> Result<Exchange, ProxyError> {
        let config = Rc::clone(&self.config);
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
        let req = request::parse(&self.cbuf.data()[..head_len], &mut slots, &config.limits, &config.http)
            .map_err(ProxyError::Request)?;
        self.req.http10 = req.http10;
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
            self.req.log_marks = marks;
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
        self.req.routed = true;
        let action = match route.map(|(r, m)| (&r.action, m)) {
            None => Action::Local(404),
            Some((RouteAction::Status(s), _)) => Action::Local(*s),
            Some((RouteAction::RedirectHttps { port }, _)) => {
                if req.host.is_empty() {
                    return Err(ProxyError::Request(RequestError::BadRequest("no Host to redirect to")));
                }
                // The Location is kept where the upstream head would be.
                https_location(req.host, *port, req.path, req.query, &mut self.uhead);
                self.req.redirect = true;
                Action::Redirect
            }
            Some((RouteAction::Proxy { upstream, strip_prefix }, matched)) => {
                let path: &[u8] = match (asterisk, strip_prefix) {
                    (true, _) => b"*",
                    (false, true) if self.path.len() > matched => &self.path[matched..],
                    (false, true) => b"/",
                    (false, false) => &self.path,
                };
                let subject_header = listener.tls.as_ref().and_then(|t| t.client_subject_header.as_deref());
                let fwd = request::Forwarded {
                    client: self.peer_text.as_bytes(),
                    proto: if self.client.tls().is_some() { b"https" } else { b"http" },
                    client_subject: subject_header.map(|h| (h, self.client.client_subject())),
                    believe: self.believe_forwarded,
                };
                let dropped = request::write_upstream_head(&req, path, &fwd, &config.http, &mut self.uhead);
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
}

/// `https://HOST[:PORT]TARGET`: the request's host without its port, the
/// configured port unless it is 443, and the target as the client sent it.
fn https_location(host: &[u8], port: Option<u16>, path: &[u8], query: &[u8], out: &mut Vec<u8>) {
    // `[v6]:port` or `name:port`: the port follows the last `:` after any `]`.
    let after_bracket = host.iter().rposition(|&b| b == b']').map_or(0, |i| i + 1);
    let name = match host[after_bracket..].iter().position(|&b| b == b':') {
        Some(colon) => &host[..after_bracket + colon],
        None => host,
    };
    out.clear();
    out.extend_from_slice(b"https://");
    out.extend_from_slice(name);
    if let Some(p) = port.filter(|&p| p != 443) {
        out.push(b':');
        crate::http::headers::push_decimal(out, u64::from(p));
    }
    out.extend_from_slice(path);
    out.extend_from_slice(query);
}

/// An IP address as text, stored inline (the longest IPv6 text is 45 bytes).
pub(super) struct IpText {
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    pub(super) fn new(ip: std::net::IpAddr) -> Self {
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

#[cfg(test)]
mod tests {
    use super::https_location;

    #[test]
    fn redirects_keep_host_and_target_and_swap_the_port() {
        let loc = |host: &[u8], port, path: &[u8], query: &[u8]| {
            let mut out = Vec::new();
            https_location(host, port, path, query, &mut out);
            String::from_utf8(out).expect("ascii")
        };
        assert_eq!(loc(b"example.com", None, b"/a/b", b"?x=1"), "https://example.com/a/b?x=1");
        assert_eq!(loc(b"example.com:8080", None, b"/", b""), "https://example.com/");
        assert_eq!(loc(b"example.com:8080", Some(8443), b"/", b""), "https://example.com:8443/");
        assert_eq!(loc(b"example.com", Some(443), b"/", b""), "https://example.com/");
        assert_eq!(loc(b"[::1]:8080", Some(8443), b"/p", b""), "https://[::1]:8443/p");
        assert_eq!(loc(b"[::1]", None, b"/p", b""), "https://[::1]/p");
    }
}
