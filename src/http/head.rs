//! Finding the end of a message head across reads. Bytes are scanned once,
//! as they arrive; the head is handed to `httparse` only when complete, so
//! a slow sender never makes us re-parse from the start, and the byte limit
//! is enforced on what has arrived, not on what was parsed.

/// Why a head could not be delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// A line ended in LF without CR. RFC 9112 §2.2 lets a recipient accept
    /// it; we do not, because intermediaries that disagree on line ends are
    /// a smuggling vector.
    BareLf,
    /// More than the allowed bytes arrived without the head ending.
    TooLarge,
}

/// Incremental scanner for the `CRLF CRLF` that ends a head.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    scanned: usize,
}

impl HeadScanner {
    /// Starts over for the next head, whose first byte is at the start of the buffer.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// `buf` holds the head's bytes from its first byte on (and possibly
    /// more). Returns the head's length once complete.
    pub fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, HeadError> {
        let mut i = self.scanned;
        while let Some(off) = buf.get(i..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
            let lf = i + off;
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(HeadError::BareLf);
            }
            if lf >= 3 && &buf[lf - 3..lf] == b"\r\n\r" {
                let len = lf + 1;
                self.scanned = 0;
                return if len > max { Err(HeadError::TooLarge) } else { Ok(Some(len)) };
            }
            i = lf + 1;
        }
        // Nothing before `buf.len()` is looked at again: the terminator is
        // recognised at its final LF by looking back three bytes, so a CR
        // (or CRLF CR) at the very end is found once that LF arrives.
        self.scanned = buf.len();
        if buf.len() > max {
            return Err(HeadError::TooLarge);
        }
        Ok(None)
    }
}

/// Number of empty lines (CRLF) before a request line; RFC 9112 §2.2 asks a
/// server to ignore at least one, and clients send them after bodies.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    while buf.get(n..n + 2) == Some(b"\r\n") {
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(input: &[u8], step: usize) -> Result<Option<usize>, HeadError> {
        let mut s = HeadScanner::default();
        let mut end = 0;
        loop {
            end = (end + step).min(input.len());
            match s.scan(&input[..end], 1024)? {
                Some(n) => return Ok(Some(n)),
                None if end == input.len() => return Ok(None),
                None => {}
            }
        }
    }

    #[test]
    fn finds_end_for_every_split() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        for step in 1..req.len() {
            assert_eq!(scan_in_pieces(req, step), Ok(Some(27)), "step {step}");
        }
    }

    #[test]
    fn partial_head_waits() {
        assert_eq!(scan_in_pieces(b"GET / HTTP/1.1\r\nHost: a\r\n", 3), Ok(None));
        assert_eq!(scan_in_pieces(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 1), Ok(None));
    }

    #[test]
    fn bare_lf_is_refused() {
        assert_eq!(scan_in_pieces(b"GET / HTTP/1.1\nHost: a\r\n\r\n", 4), Err(HeadError::BareLf));
        assert_eq!(scan_in_pieces(b"GET / HTTP/1.1\r\nHost: a\n\n", 4), Err(HeadError::BareLf));
        assert_eq!(scan_in_pieces(b"\n", 1), Err(HeadError::BareLf));
    }

    #[test]
    fn limit_counts_arrived_bytes() {
        let mut s = HeadScanner::default();
        let big = vec![b'a'; 2000];
        assert_eq!(s.scan(&big, 1024), Err(HeadError::TooLarge));
        let mut s = HeadScanner::default();
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(vec![b'a'; 1100]);
        head.extend(b"\r\n\r\n");
        assert_eq!(s.scan(&head, 1024), Err(HeadError::TooLarge));
    }

    #[test]
    fn skips_leading_empty_lines() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"\r\nGET"), 2);
        assert_eq!(leading_empty_lines(b"GET"), 0);
        assert_eq!(leading_empty_lines(b"\r"), 0);
    }
}
