//! Refusing what cannot be an HTTP request as soon as its bytes arrive.
//! A TLS ClientHello, binary garbage or a lower-case method on a plaintext
//! listener would otherwise hold a connection until the header deadline and
//! then get a 408; checked byte by byte, the first impossible byte gets a
//! 400 and a close. Only the shape is checked here (method token, target
//! bytes, `HTTP/d.d`); `request::parse` validates the complete head.

use super::request::{is_method_byte, RequestError, MAX_METHOD_BYTES};

/// Which part of `method SP target SP version CRLF` the next byte is in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Part {
    #[default]
    Method,
    Target,
    /// The version, with the offset of its first byte.
    Version(usize),
    /// The line is complete (its CR seen), with the offset of the
    /// version's first byte; the rest is for the parser.
    Done(usize),
}

/// The shape every request line has, byte by byte.
const VERSION_SHAPE: &[u8] = b"HTTP/d.d\r";

/// An incremental check of the request line; resumes where it stopped, so
/// a slow sender costs each byte one look.
#[derive(Debug, Default, Clone)]
pub struct RequestLineCheck {
    /// Bytes of the line already checked.
    checked: usize,
    part: Part,
    /// Offset of the SP after the method, once seen (a method is never
    /// empty, so 0 means not yet).
    method_end: usize,
}

/// What a request line says for certain so far, as offsets into the
/// buffer the check reads (for the access log of a refused request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSoFar {
    /// `buf[..method_end]`, once the SP after it arrived.
    pub method_end: Option<usize>,
    /// `buf[method_end + 1..target_end]`, once the SP after it arrived.
    pub target_end: Option<usize>,
    /// The version is complete and reads `HTTP/1.0`.
    pub http10: bool,
}

impl RequestLineCheck {
    /// Starts over for the next request line.
    pub fn reset(&mut self) {
        *self = RequestLineCheck::default();
    }

    /// `buf` holds the request from its first byte on (leading empty lines
    /// already skipped). An error means no byte that could follow would
    /// make it a request.
    pub fn check(&mut self, buf: &[u8], max_target: usize) -> Result<(), RequestError> {
        while !matches!(self.part, Part::Done(_)) {
            let Some(&b) = buf.get(self.checked) else { return Ok(()) };
            let at = self.checked;
            self.part = match self.part {
                Part::Method if b == b' ' && at > 0 => {
                    self.method_end = at;
                    Part::Target
                }
                Part::Method if at >= MAX_METHOD_BYTES => return Err(RequestError::NotImplemented("method too long")),
                Part::Method if is_method_byte(b) => Part::Method,
                Part::Method => return Err(RequestError::BadRequest("not an HTTP request line")),
                Part::Target if b == b' ' => match buf.get(at - 1) {
                    Some(b' ') => return Err(RequestError::BadRequest("empty request target")),
                    _ => Part::Version(at + 1),
                },
                // Visible ASCII and obs-text; a CTL (CR, LF, TAB) cannot be
                // in a target, and a line without a version is HTTP/0.9.
                Part::Target if b <= b' ' || b == 0x7f => {
                    return Err(RequestError::BadRequest("control byte in the request target"))
                }
                Part::Target if at > max_target + MAX_METHOD_BYTES => return Err(RequestError::TargetTooLong),
                Part::Target => Part::Target,
                Part::Version(start) => {
                    let expected = VERSION_SHAPE[at - start];
                    let fits = if expected == b'd' { b.is_ascii_digit() } else { b == expected };
                    match (fits, expected) {
                        (false, _) => return Err(RequestError::BadRequest("malformed HTTP version")),
                        (true, b'\r') => Part::Done(start),
                        (true, _) => Part::Version(start),
                    }
                }
                Part::Done(start) => Part::Done(start),
            };
            self.checked += 1;
        }
        Ok(())
    }

    /// What the bytes checked so far say for certain (`buf` is the buffer
    /// `check` last read).
    pub fn so_far(&self, buf: &[u8]) -> LineSoFar {
        let method_end = (self.method_end > 0).then_some(self.method_end);
        let (target_end, version) = match self.part {
            Part::Version(start) => (Some(start - 1), None),
            Part::Done(start) => (Some(start - 1), buf.get(start..start + 8)),
            Part::Method | Part::Target => (None, None),
        };
        LineSoFar { method_end, target_end, http10: version == Some(b"HTTP/1.0") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; the first error, if any.
    fn run(input: &[u8], step: usize) -> Result<(), RequestError> {
        let mut c = RequestLineCheck::default();
        let mut end = 0;
        while end < input.len() {
            end = (end + step).min(input.len());
            c.check(&input[..end], 8192)?;
        }
        Ok(())
    }

    fn all_splits(input: &[u8]) -> Result<(), RequestError> {
        let first = run(input, input.len().max(1));
        for step in 1..input.len() {
            assert_eq!(run(input, step), first, "split {step} of {:?}", String::from_utf8_lossy(input));
        }
        first
    }

    #[test]
    fn valid_lines_and_their_prefixes_pass() {
        for line in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n"[..],
            b"M-SEARCH * HTTP/1.1\r\n",
            b"OPTIONS http://h HTTP/1.0\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n",
            b"GET /app1 HTTP/2.0\r\n",
            b"G",
            b"GET /a",
        ] {
            assert_eq!(all_splits(line), Ok(()), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn impossible_bytes_fail_at_once() {
        let bad: [&[u8]; 11] = [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\x00\x01\x02\xff",
            b"get / HTTP/1.1\r\n",
            b"GeT",
            b" GET / HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET /\x01 HTTP/1.1\r\n",
            b"GET /\r\n",
            b"GET /a\tHTTP/1.1\r\n",
            b"GET / http/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
        ];
        for input in bad {
            assert!(
                matches!(all_splits(input), Err(RequestError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // The first byte decides a ClientHello.
        assert!(run(b"\x16", 1).is_err());
    }

    #[test]
    fn what_is_certain_so_far() {
        let mut c = RequestLineCheck::default();
        let line = b"POST /a?b HTTP/1.0\r\nHost: x\r\n";
        let seen = |c: &mut RequestLineCheck, n: usize| {
            let _ = c.check(&line[..n], 8192);
            c.so_far(&line[..n])
        };
        assert_eq!(seen(&mut c, 4), LineSoFar { method_end: None, target_end: None, http10: false });
        assert_eq!(seen(&mut c, 7), LineSoFar { method_end: Some(4), target_end: None, http10: false });
        assert_eq!(seen(&mut c, 12), LineSoFar { method_end: Some(4), target_end: Some(9), http10: false });
        assert_eq!(seen(&mut c, line.len()), LineSoFar { method_end: Some(4), target_end: Some(9), http10: true });
        // A refused line keeps what was certain before the refusal.
        let mut c = RequestLineCheck::default();
        let bad = b"GET /\x01 HTTP/1.1\r\n";
        assert!(c.check(bad, 8192).is_err());
        assert_eq!(c.so_far(bad), LineSoFar { method_end: Some(3), target_end: None, http10: false });
    }

    #[test]
    fn a_space_inside_the_target_is_a_bad_version() {
        assert!(matches!(all_splits(b"GET /app1 x HTTP/1.1\r\n"), Err(RequestError::BadRequest(_))));
    }

    #[test]
    fn long_methods_and_targets_are_refused_early() {
        assert_eq!(all_splits(&[b'A'; 40]), Err(RequestError::NotImplemented("method too long")));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(run(&long, 1000), Err(RequestError::TargetTooLong));
    }
}
