//! The head a request is forwarded with: the client's end-to-end fields
//! re-serialized in order, one merged `X-Forwarded-For`, and exactly one
//! framing field.

use super::Request;
use crate::config::{HttpPolicy, Underscores};
use crate::http::headers::{list_items, push_decimal, push_field, trim_ows};
use crate::http::BodyKind;

/// What ringway adds about the client: its address, the scheme it used,
/// and on mTLS listeners its certificate's subject.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address as text (formatted once per connection).
    pub client: &'a [u8],
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: &'a [u8],
    /// `(header name, subject)`: the header is always replaced, never
    /// passed from the client; the subject is absent without a verified
    /// client certificate.
    pub client_subject: Option<(&'a str, Option<&'a [u8]>)>,
    /// Believe the client's own forwarding fields: its `X-Forwarded-For`
    /// is appended to and its `X-Real-IP` and `Forwarded` pass. Otherwise
    /// (a client outside the listener's `trusted`, under `[http] forwarded
    /// = "replace"`) they are removed, and `X-Real-IP` is the client.
    pub believe: bool,
}

impl<'a> Forwarded<'a> {
    /// A plaintext client at `client`.
    pub fn plain(client: &'a [u8]) -> Self {
        Forwarded { client, proto: b"http", client_subject: None, believe: true }
    }
}

/// Writes the head the upstream receives: canonical start line with the
/// routed `path`, the client's end-to-end fields in order, forwarding
/// fields, and exactly one framing field. Returns how many fields were
/// dropped for a `_` in their name (`[http] underscores_in_headers`).
pub fn write_upstream_head(
    req: &Request<'_, '_>,
    path: &[u8],
    fwd: &Forwarded<'_>,
    policy: &HttpPolicy,
    out: &mut Vec<u8>,
) -> usize {
    out.clear();
    out.extend_from_slice(req.method_token.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(req.query);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(req.host);
    out.extend_from_slice(b"\r\n");
    let mut forwarded_for = false;
    let drop_underscored = req.underscored > 0 && policy.underscores == Underscores::Drop;
    let mut dropped = 0;
    for h in req.headers {
        let name = h.name.as_bytes();
        if drop_underscored && name.contains(&b'_') {
            dropped += 1;
            continue;
        }
        if req.connection.drops(name)
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || fwd.client_subject.is_some_and(|(h, _)| name.eq_ignore_ascii_case(h.as_bytes()))
            || (!fwd.believe && (name.eq_ignore_ascii_case(b"x-real-ip") || name.eq_ignore_ascii_case(b"forwarded")))
        {
            continue;
        }
        push_field(out, name, h.value);
    }
    // One X-Forwarded-For: the client's list (in order) plus the client.
    out.extend_from_slice(b"X-Forwarded-For: ");
    let believed = req.headers.iter().filter(|_| fwd.believe);
    for h in believed.filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")) {
        let v = trim_ows(h.value);
        if !v.is_empty() {
            if forwarded_for {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v);
            forwarded_for = true;
        }
    }
    if forwarded_for {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client);
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(fwd.proto);
    out.extend_from_slice(b"\r\n");
    if !fwd.believe {
        out.extend_from_slice(b"X-Real-IP: ");
        out.extend_from_slice(fwd.client);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((name, Some(subject))) = fwd.client_subject {
        push_field(out, name.as_bytes(), subject);
    }
    if let Some(offer) = req.upgrade {
        // Only the protocols `[http] upgrades` allows; `parse` made sure
        // there is at least one.
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        for (i, p) in list_items(offer).filter(|p| policy.allows_upgrade(p)).enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\r\n");
    }
    match req.body {
        BodyKind::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyKind::None | BodyKind::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
    dropped
}
