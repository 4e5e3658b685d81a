//! Responses the proxy writes itself: route statuses and errors.

use std::io::Write;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
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

/// A complete response with a short text body. `head_only` omits the body
/// (answering HEAD) but keeps its length.
/// Returns the body bytes written.
pub fn write_status(status: u16, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) -> u64 {
    out.clear();
    let reason = reason(status);
    let body_len = 3 + 1 + reason.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nServer: ringway\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n{}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    if head_only {
        return 0;
    }
    let _ = writeln!(out, "{status} {reason}");
    body_len as u64
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_response_is_framed() {
        let mut out = Vec::new();
        write_status(403, true, false, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Content-Length: 14\r\n"));
        assert!(text.ends_with("\r\n\r\n403 Forbidden\n"));
        let mut out = Vec::new();
        write_status(502, false, true, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("Connection: close\r\n") && text.ends_with("\r\n\r\n"));
    }
}
