//! What the access log records of a request: the fields of a parsed head,
//! or, for a request refused before its head could be parsed, what its
//! request line says for certain; and its duration from its first byte.
//! Nothing here runs unless access logging is on.

use super::Session;
use crate::access_log;
use crate::http::request;
use std::time::Instant;

/// Keeps what the access log needs from a head about to be consumed:
/// method, target, Referer, User-Agent, with `marks` their end offsets.
pub(super) fn keep_for_log(req: &request::Request<'_, '_>, buf: &mut Vec<u8>, marks: &mut [u32; 4]) {
    buf.clear();
    buf.extend_from_slice(req.method_token.as_bytes());
    let m = buf.len();
    buf.extend_from_slice(req.path);
    buf.extend_from_slice(req.query);
    let t = buf.len();
    let find = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    buf.extend_from_slice(find("referer").unwrap_or_default());
    let r = buf.len();
    buf.extend_from_slice(find("user-agent").unwrap_or_default());
    *marks = [m, t, r, buf.len()].map(offset);
}

impl Session {
    /// For a request refused, or still incomplete, before its head was
    /// parsed: keeps what its request line says for certain. The method
    /// counts once the space after it came; the target once the space
    /// after it came, and only within `max_target_bytes` (a 414's target
    /// is not logged). What is not known logs as `-`. Only what became
    /// known since the last call is copied, so calling this before each
    /// read of a slow head copies each byte of the line at most twice.
    pub(super) fn keep_line_for_log(&mut self) {
        let data = self.cbuf.data();
        // Empty: nothing came, or a timed-out read took the buffer with it;
        // what was kept before that read stays.
        if !self.worker.logs_access() || data.is_empty() {
            return;
        }
        let max_target = self.config.limits.max_target_bytes;
        // A head that came whole was never line-checked, and a refused line
        // stays where it was refused: either way this only resumes.
        let _ = self.line_check.check(data, max_target);
        let line = self.line_check.so_far(data);
        self.req.http10 = line.http10;
        let method = line.method_end.and_then(|m| data.get(..m));
        let target = (line.method_end.zip(line.target_end))
            .and_then(|(m, t)| data.get(m + 1..t))
            .filter(|t| t.len() <= max_target);
        let [m, t, ..] = self.req.log_marks.map(|o| o as usize);
        let had = usize::from(m > 0) + usize::from(t > m);
        if usize::from(method.is_some()) + usize::from(target.is_some()) <= had {
            return;
        }
        self.log_req.clear();
        self.log_req.extend_from_slice(method.unwrap_or_default());
        let m = self.log_req.len();
        self.log_req.extend_from_slice(target.unwrap_or_default());
        let t = self.log_req.len();
        self.req.log_marks = [m, t, t, t].map(offset);
    }

    /// Hands the line of the request that just ended to the worker's log
    /// buffer. `started` is when the request was counted as in flight.
    pub(super) fn log_request(&self, now: Instant, started: Instant, route: &str) {
        let [m, t, r, u] = self.req.log_marks.map(|o| o as usize);
        let field = |a: usize, b: usize| self.log_req.get(a..b).unwrap_or_default();
        // From the request's first byte (nginx's $request_time). It is known
        // when the head spanned reads; a head that came in one read was
        // complete when `started` was taken.
        let began = self.req.head_began.unwrap_or(started);
        self.worker.log_access(&access_log::Entry {
            client: self.peer,
            method: field(0, m),
            target: field(m, t),
            http10: self.req.http10,
            status: self.req.status,
            bytes: self.req.bytes_sent,
            duration: now.saturating_duration_since(began),
            upstream: self.req.upstream_addr,
            route,
            referer: field(t, r),
            user_agent: field(r, u),
            tls: self.client.tls().map(|t| access_log::TlsFields {
                version: crate::tls::version_name(t.protocol_version()),
                cipher: t.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("-"),
                sni: match t {
                    rustls::Connection::Server(s) => s.server_name().unwrap_or_default(),
                    rustls::Connection::Client(_) => "",
                },
            }),
        });
    }
}

/// An offset into the log buffer, which never nears 4 GiB (heads are
/// capped far below); saturating keeps a field empty rather than wrong.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
