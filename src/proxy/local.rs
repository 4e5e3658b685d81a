//! Responses the proxy writes itself: a route's status, and the error
//! answer of a failed request. Either way the request body must not be
//! parsed as the next request: a small one is read and dropped, otherwise
//! the connection closes after the answer.

use super::error::ProxyError;
use super::{side_name, Exchange, Next, Session, CLIENT_CLOSED};
use crate::http::request::Method;
use crate::http::BodyKind;
use std::io::Write;

/// Largest body we read and discard to keep a connection open after a
/// local answer; a larger declared body closes the connection instead.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;

/// The reason phrase ringway writes for `status` on its own answers.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// A complete response with a short text body, and a `Location` field for
/// a redirect. `head_only` omits the body (answering HEAD) but keeps its
/// length. Returns the body bytes written.
fn write_answer(status: u16, location: Option<&[u8]>, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) -> u64 {
    out.clear();
    let reason = reason(status);
    let body_len = 3 + 1 + reason.len() + 1;
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\nServer: ringway\r\n");
    if let Some(location) = location {
        out.extend_from_slice(b"Location: ");
        out.extend_from_slice(location);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "Content-Type: text/plain\r\nContent-Length: {body_len}\r\n{}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    if head_only {
        return 0;
    }
    let _ = writeln!(out, "{status} {reason}");
    body_len as u64
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Session {
    /// Answers with a route's status.
    pub(super) async fn answer_locally(&mut self, status: u16, x: Exchange) -> Result<Next, ProxyError> {
        let mut keep = x.keep_alive && !self.worker.is_shutting_down();
        match x.body {
            BodyKind::None => {}
            BodyKind::Length(n) if n <= DRAIN_MAX_BYTES && !x.expect_continue => {
                keep &= self.drain(n).await.is_ok();
            }
            _ => keep = false,
        }
        self.send_local(status, keep, x.method == Method::Head).await?;
        Ok(if keep { Next::KeepAlive } else { Next::Close })
    }

    /// Answers a failed request with its status, if nothing was sent yet.
    pub(super) async fn answer_error(&mut self, e: ProxyError) {
        log::debug!("{} side failed for {}: {e:?}", side_name(e.side()), self.peer);
        self.req.redirect = false;
        match (self.req.response_started, e.status()) {
            (false, Some(status)) => {
                // The connection closes after it either way.
                let _ = self.send_local(status, false, false).await;
            }
            (false, None) => self.req.status = CLIENT_CLOSED,
            (true, _) => {}
        }
    }

    /// The one way a local answer leaves: written whole within
    /// `client_send`.
    async fn send_local(&mut self, status: u16, keep_alive: bool, head_only: bool) -> Result<(), ProxyError> {
        // A redirect's Location was written into `uhead` by the routing
        // phase (a local answer sends nothing upstream).
        let location = self.req.redirect.then_some(&self.uhead[..]);
        self.req.bytes_sent = write_answer(status, location, keep_alive, head_only, &mut self.out);
        self.req.response_started = true;
        self.req.status = status;
        self.send_out().await
    }

    /// Reads and drops `left` body bytes.
    async fn drain(&mut self, mut left: u64) -> Result<(), ProxyError> {
        while left > 0 {
            if self.cbuf.is_empty() {
                self.read_body_bytes().await?;
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(self.cbuf.len());
            self.cbuf.consume(k);
            left -= k as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_response_is_framed() {
        let mut out = Vec::new();
        write_answer(403, None, true, false, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Content-Length: 14\r\n"));
        assert!(text.ends_with("\r\n\r\n403 Forbidden\n"));
        let mut out = Vec::new();
        write_answer(502, None, false, true, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("Connection: close\r\n") && text.ends_with("\r\n\r\n"));
    }
}
