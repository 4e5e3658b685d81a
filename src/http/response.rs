//! Response heads from upstreams: validation (any doubt is a 502 and the
//! upstream connection is discarded) and the head written to the client,
//! re-framed for the client's HTTP version.

use super::headers::{list_items, parse_content_length, push_decimal, push_field, ConnectionOptions};
use super::BodyKind;
use std::mem::MaybeUninit;

/// Why an upstream response was refused (always 502 to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// A validated upstream response head, borrowing from the read buffer.
#[derive(Debug)]
pub struct Response<'b, 'h> {
    /// The status code (100 to 599).
    pub status: u16,
    /// The reason phrase as sent (possibly empty).
    pub reason: &'b str,
    /// How the response body is framed (none for HEAD, 1xx, 204 and 304).
    pub body: BodyKind,
    /// The upstream will close (or must be closed) after this response.
    pub upstream_close: bool,
    /// The declared `Content-Length`, parsed (duplicates were equal).
    pub length: Option<u64>,
    /// The `Upgrade` field (meaningful on a 101).
    pub upgrade: Option<&'b [u8]>,
    /// The `Connection` options and the fields it names.
    pub connection: ConnectionOptions<'b>,
    /// Every field, in order, as parsed.
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, CRLF CRLF included.
    pub head_len: usize,
}

impl Response<'_, '_> {
    /// 1xx other than 101: informational, another head follows.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a complete response head to a request (`head_request`: the
/// request was HEAD, so no body follows whatever the fields say).
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
    head_request: bool,
) -> Result<Response<'b, 'h>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(BadResponse("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many header fields")),
        Err(_) => return Err(BadResponse("malformed head")),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(BadResponse("invalid status code"));
    }
    let http10 = resp.version == Some(0);
    let reason = resp.reason.unwrap_or("");
    let headers: &'h [httparse::Header<'b>] = resp.headers;

    let mut length: Option<u64> = None;
    let mut te: Option<bool> = None;
    let mut connection = ConnectionOptions::default();
    let mut upgrade = None;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = Some(super::headers::trim_ows(h.value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(BadResponse("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te.is_some() {
                return Err(BadResponse("repeated Transfer-Encoding"));
            }
            let mut items = list_items(h.value);
            te = Some(matches!((items.next(), items.next()), (Some(c), None) if c.eq_ignore_ascii_case(b"chunked")));
        } else if name.eq_ignore_ascii_case(b"connection") && !connection.add(h.value) {
            return Err(BadResponse("Connection names too many fields"));
        }
    }
    let bodyless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = match (te, length) {
        (Some(_), Some(_)) => return Err(BadResponse("both Transfer-Encoding and Content-Length")),
        _ if bodyless => BodyKind::None,
        (Some(true), None) => BodyKind::Chunked,
        // A coding we cannot decode: the body runs until close (RFC 9112 §6.3).
        (Some(false), None) => BodyKind::UntilClose,
        (None, Some(0)) => BodyKind::None,
        (None, Some(n)) => BodyKind::Length(n),
        (None, None) => BodyKind::UntilClose,
    };
    let upstream_close =
        connection.close || (http10 && !connection.keep_alive) || body == BodyKind::UntilClose || te == Some(false);
    if status == 101 && upgrade.is_none_or(<[u8]>::is_empty) {
        return Err(BadResponse("101 without Upgrade"));
    }
    Ok(Response { status, reason, body, upstream_close, length, upgrade, connection, headers, head_len })
}

/// How the client will receive the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked, re-encoded by the proxy.
    Chunked,
    /// Close-delimited: only for HTTP/1.0 clients.
    UntilClose,
    /// No body: the connection switches protocols after the head (101).
    Switch,
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Chooses the client-side framing for an upstream body.
pub fn client_framing(body: BodyKind, client_http10: bool) -> ClientFraming {
    match body {
        BodyKind::None => ClientFraming::None,
        BodyKind::Length(n) => ClientFraming::Length(n),
        BodyKind::Chunked | BodyKind::UntilClose if client_http10 => ClientFraming::UntilClose,
        BodyKind::Chunked | BodyKind::UntilClose => ClientFraming::Chunked,
    }
}

/// Writes the head the client receives. `keep_alive` is whether the client
/// connection stays open afterwards; `bodyless_length` keeps the upstream's
/// Content-Length on HEAD/304 answers, where it describes the resource.
pub fn write_client_head(
    resp: &Response<'_, '_>,
    framing: ClientFraming,
    client_http10: bool,
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    let reason = if resp.reason.is_empty() { "-" } else { resp.reason };
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        let name = h.name.as_bytes();
        if resp.connection.drops(name) {
            continue;
        }
        push_field(out, name, h.value);
    }
    // On a HEAD or 304 answer Content-Length describes the resource, not
    // this message: keep it, once, in canonical form.
    let described = match (framing, resp.length) {
        (ClientFraming::None, Some(n)) if resp.status != 204 && !(100..200).contains(&resp.status) => Some(n),
        _ => None,
    };
    match framing {
        ClientFraming::Length(n) => push_length(out, n),
        ClientFraming::None => {
            if let Some(n) = described {
                push_length(out, n);
            }
        }
        ClientFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ClientFraming::UntilClose | ClientFraming::Switch => {}
    }
    if resp.status == 101 {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        push_field(out, b"Upgrade", resp.upgrade.unwrap_or_default());
    } else if !resp.is_informational() {
        match (keep_alive, client_http10) {
            (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
            (true, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            (true, false) => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
