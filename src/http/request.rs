//! Request heads: strict validation on top of `httparse`, and the canonical
//! head written to the upstream. Header names and values stay slices of the
//! client's read buffer; the only copy is the re-serialized output head.

use super::headers::{list_items, parse_content_length, trim_ows, ConnectionOptions};
use super::path::is_pchar_raw;
use super::BodyKind;
use crate::config::{HttpPolicy, Limits, Underscores};
use std::mem::MaybeUninit;

mod upstream_head;
pub use upstream_head::{write_upstream_head, Forwarded};

/// Why a request was refused; each maps to one status, and the client
/// connection is closed after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// 400, with the reason for the log.
    BadRequest(&'static str),
    /// 414: the target is longer than `max_target_bytes`.
    TargetTooLong,
    /// 431: the head is larger than `max_header_bytes`.
    HeadTooLarge,
    /// 431: more fields than `max_headers`.
    TooManyHeaders,
    /// 413: the declared body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// 505: neither HTTP/1.1 nor HTTP/1.0.
    VersionNotSupported,
    /// 501 (a transfer coding other than chunked, an overlong method), with the reason.
    NotImplemented(&'static str),
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
}

impl RequestError {
    /// The status the client is answered with.
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::TargetTooLong => 414,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::BodyTooLarge => 413,
            RequestError::VersionNotSupported => 505,
            RequestError::NotImplemented(_) => 501,
            RequestError::ExpectationFailed => 417,
        }
    }
}

/// Methods the proxy treats specially; anything else passes through as a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: the response has no body, whatever it declares.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
    /// Any other token, forwarded as sent (`CONNECT` is refused with 501).
    Other,
}

impl Method {
    /// Case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    fn from_token(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2, as an allow-list.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Other)
    }
}

/// A validated request head, borrowing from the read buffer.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// The method, for the cases the proxy treats specially.
    pub method: Method,
    /// The method as sent, forwarded unchanged.
    pub method_token: &'b str,
    /// The path as sent (before normalization), without the query.
    pub path: &'b [u8],
    /// `?query` as sent, or empty.
    pub query: &'b [u8],
    /// Host for the upstream: the absolute-form authority or the Host field.
    pub host: &'b [u8],
    /// HTTP/1.0 (else HTTP/1.1).
    pub http10: bool,
    /// How the request body is framed.
    pub body: BodyKind,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The `Upgrade` value, when `Connection: upgrade` came with it and it
    /// offers at least one protocol `[http] upgrades` allows (the others
    /// are removed when forwarding).
    pub upgrade: Option<&'b [u8]>,
    /// Fields whose name contains `_` (see `Underscores`).
    pub underscored: usize,
    /// The `Connection` options and the fields it names.
    pub connection: ConnectionOptions<'b>,
    /// Every field, in order, as parsed.
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, CRLF CRLF included.
    pub head_len: usize,
}

/// Longest method token accepted (RFC 9112 §3: a longer one gets 501).
pub const MAX_METHOD_BYTES: usize = 32;

type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>];

/// Parses a complete head (`buf[..head_len]` ends in CRLF CRLF).
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
    limits: &Limits,
    policy: &HttpPolicy,
) -> Result<Request<'b, 'h>, RequestError> {
    let slots_len = slots.len().min(limits.max_headers);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots[..slots_len]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(RequestError::BadRequest("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(RequestError::BadRequest("malformed head")),
    };
    let method_token = req.method.unwrap_or("");
    let target = req.path.unwrap_or("").as_bytes();
    let http10 = req.version == Some(0);
    let headers: &'h [httparse::Header<'b>] = req.headers;

    if target.len() > limits.max_target_bytes {
        return Err(RequestError::TargetTooLong);
    }
    if method_token.len() > MAX_METHOD_BYTES {
        return Err(RequestError::NotImplemented("method too long"));
    }
    if !method_token.bytes().all(is_method_byte) {
        return Err(RequestError::BadRequest("method is not an upper-case token"));
    }
    if method_token == "CONNECT" {
        return Err(RequestError::NotImplemented("CONNECT"));
    }
    let method = Method::from_token(method_token);

    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut te_seen = false;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut connection = ConnectionOptions::default();
    let mut underscored = 0;
    for h in headers {
        let name = h.name.as_bytes();
        if name.contains(&b'_') {
            underscored += 1;
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(trim_ows(h.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(RequestError::BadRequest("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(RequestError::BadRequest("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen {
                return Err(RequestError::BadRequest("repeated Transfer-Encoding"));
            }
            te_seen = true;
            let mut items = list_items(h.value);
            match (items.next(), items.next()) {
                (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => chunked = true,
                (None, _) => return Err(RequestError::BadRequest("empty Transfer-Encoding")),
                _ => return Err(RequestError::NotImplemented("transfer coding other than chunked")),
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !connection.add(h.value) {
                return Err(RequestError::BadRequest("Connection names too many fields"));
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            if upgrade.is_some() {
                return Err(RequestError::BadRequest("repeated Upgrade"));
            }
            upgrade = Some(trim_ows(h.value)).filter(|v| !v.is_empty());
        } else if name.eq_ignore_ascii_case(b"expect") {
            if trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(RequestError::ExpectationFailed);
            }
        }
    }

    if underscored > 0 && policy.underscores == Underscores::Reject {
        return Err(RequestError::BadRequest("underscore in a header name"));
    }
    let (path, query, authority) = split_target(target, method)?;
    if hosts > 1 {
        return Err(RequestError::BadRequest("more than one Host"));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, even
    // in absolute-form, whose authority then replaces it.
    if hosts == 0 && !http10 {
        return Err(RequestError::BadRequest("missing Host"));
    }
    let host = match (authority, host) {
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) if http10 => b"",
        (None, None) => return Err(RequestError::BadRequest("missing Host")),
    };
    if !host.is_empty() && !valid_host(host) || (host.is_empty() && hosts == 1) {
        return Err(RequestError::BadRequest("invalid Host"));
    }

    let body = match (te_seen, length) {
        (true, Some(_)) => return Err(RequestError::BadRequest("both Transfer-Encoding and Content-Length")),
        (true, None) if http10 => return Err(RequestError::BadRequest("Transfer-Encoding in HTTP/1.0")),
        (true, None) if chunked => BodyKind::Chunked,
        (_, Some(0)) | (_, None) => BodyKind::None,
        (_, Some(n)) => BodyKind::Length(n),
    };
    if let (BodyKind::Length(n), Some(max)) = (body, limits.max_body_bytes) {
        if n > max {
            return Err(RequestError::BodyTooLarge);
        }
    }
    let keep_alive = if http10 { connection.keep_alive && !connection.close } else { !connection.close };
    Ok(Request {
        method,
        method_token,
        path,
        query,
        host,
        http10,
        body,
        keep_alive,
        expect_continue: expect_continue && !http10 && body != BodyKind::None,
        // HTTP/1.0 has no Upgrade (RFC 9110 §7.8); without the Connection
        // option the field is an ordinary hop-by-hop field and is dropped.
        upgrade: upgrade
            .filter(|_| connection.upgrade && !http10)
            .filter(|offer| list_items(offer).any(|p| policy.allows_upgrade(p))),
        underscored,
        connection,
        headers,
        head_len,
    })
}

/// A request target split into path, `?query`, and absolute-form authority.
type TargetParts<'b> = (&'b [u8], &'b [u8], Option<&'b [u8]>);

/// Splits the request target into its parts.
fn split_target(target: &[u8], method: Method) -> Result<TargetParts<'_>, RequestError> {
    if target == b"*" {
        return if method == Method::Options {
            Ok((b"*", b"", None))
        } else {
            Err(RequestError::BadRequest("asterisk-form outside OPTIONS"))
        };
    }
    if target.contains(&b'#') {
        return Err(RequestError::BadRequest("fragment in target"));
    }
    let (authority, rest) = match target.first() {
        Some(b'/') => (None, target),
        _ => {
            let after = strip_prefix_ci(target, b"http://").ok_or(RequestError::BadRequest("invalid target"))?;
            let end = after.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after.len());
            let (auth, rest) = after.split_at(end);
            if auth.is_empty() || !valid_host(auth) {
                return Err(RequestError::BadRequest("invalid authority"));
            }
            (Some(auth), rest)
        }
    };
    let q = rest.iter().position(|&b| b == b'?').unwrap_or(rest.len());
    let (path, query) = rest.split_at(q);
    // "http://host?x" has an empty path, which means "/", except for an
    // OPTIONS about the server as a whole (RFC 9112 §3.2.4), which is "*".
    let path: &[u8] = match (path.is_empty(), method, query.is_empty()) {
        (true, Method::Options, true) => b"*",
        (true, ..) => b"/",
        (false, ..) => path,
    };
    Ok((path, query, authority))
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name / IPv4 / IP-literal,
/// without userinfo, which has no place in a Host.
fn valid_host(h: &[u8]) -> bool {
    if h.len() > 255 {
        return false;
    }
    let (name, port) = match h.iter().rposition(|&b| b == b':') {
        Some(i) if !h[i..].contains(&b']') => (&h[..i], Some(&h[i + 1..])),
        _ => (h, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    if let Some(inner) = name.strip_prefix(b"[").and_then(|n| n.strip_suffix(b"]")) {
        return !inner.is_empty() && inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    // reg-name: unreserved / pct-encoded / sub-delims, i.e. pchar without ':' and '@'.
    !name.is_empty() && name.iter().all(|&b| b == b'%' || (is_pchar_raw(b) && b != b':' && b != b'@'))
}

/// A method byte as nginx accepts it: upper-case letters, `-` and `_`.
/// Methods are case-sensitive (RFC 9110 §9.1), so `get` is not GET; a
/// backend that folds case would disagree with the proxy about which
/// method it got, and so about whether a retry was safe.
pub fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// The status for a request line httparse refused at its version: 505 when
/// the line has the shape `METHOD SP target SP HTTP/d.d` (a version we do
/// not speak), 400 when it is malformed (a space inside the target, a
/// missing or garbled version).
fn version_error(buf: &[u8]) -> RequestError {
    let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let shaped = matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(m), Some(t), Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]), None)
            if !m.is_empty() && !t.is_empty() && major.is_ascii_digit() && minor.is_ascii_digit()
    );
    if shaped {
        RequestError::VersionNotSupported
    } else {
        RequestError::BadRequest("malformed request line")
    }
}

#[cfg(test)]
mod tests;
