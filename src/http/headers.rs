//! Header field helpers shared by requests and responses: strict
//! `Content-Length`, comma-list tokens, and the hop-by-hop set.

/// Parses `Content-Length` as `1*DIGIT` with checked arithmetic. Unlike
/// `str::parse`, a sign, spaces inside, or an empty value is refused.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = trim_ows(value);
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Appends `n` in decimal. `write!` goes through `core::fmt`, which showed
/// up as a tenth of the proxy's user-space instructions per request.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `name: value` CRLF, the value trimmed of surrounding whitespace.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(trim_ows(value));
    out.extend_from_slice(b"\r\n");
}

/// Strips optional whitespace (SP / HTAB) at both ends.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The elements of a comma-separated list, trimmed, empty ones skipped
/// (RFC 9110 §5.6.1 asks recipients to ignore empty elements).
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// `Transfer-Encoding` and `Content-Length` are dropped too because the
/// proxy always writes its own framing; `HTTP2-Settings` belongs to the h2c
/// upgrade, which is never forwarded (RFC 9113 §3.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 10] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
        b"proxy-authenticate",
        b"http2-settings",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Most field names one message may list in `Connection`.
pub const MAX_CONNECTION_NAMES: usize = 16;

/// What a `Connection` header said, plus the extra field names it lists.
#[derive(Debug, Default)]
pub struct ConnectionOptions<'a> {
    /// The `close` option.
    pub close: bool,
    /// The `keep-alive` option.
    pub keep_alive: bool,
    /// The `upgrade` option: the sender offers to switch protocols.
    pub upgrade: bool,
    /// Field names listed as hop-by-hop; beyond the cap the message is refused.
    pub named: [&'a [u8]; MAX_CONNECTION_NAMES],
    /// How many of `named` are filled.
    pub named_len: usize,
}

impl<'a> ConnectionOptions<'a> {
    /// Adds one `Connection` field value; `false` when it names too many fields.
    pub fn add(&mut self, value: &'a [u8]) -> bool {
        for token in list_items(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if self.named_len == MAX_CONNECTION_NAMES {
                return false;
            } else {
                self.named[self.named_len] = token;
                self.named_len += 1;
            }
        }
        true
    }

    /// Whether `name` must be dropped when forwarding.
    pub fn drops(&self, name: &[u8]) -> bool {
        is_hop_by_hop(name) || self.named[..self.named_len].iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"005"), Some(5));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b"+5"[..], b"-1", b"0x5", b"5x", b"", b"  ", b"5 5", b"5,5", b"18446744073709551616", b"1e3"] {
            assert_eq!(parse_content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 200, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn list_items_skip_empty() {
        let items: Vec<&[u8]> = list_items(b" close ,, Foo,\tbar ").collect();
        assert_eq!(items, [&b"close"[..], b"Foo", b"bar"]);
    }

    #[test]
    fn connection_names_extra_fields() {
        let mut c = ConnectionOptions::default();
        assert!(c.add(b"keep-alive, X-Secret"));
        assert!(c.keep_alive && !c.close);
        assert!(c.drops(b"x-secret") && c.drops(b"TE") && c.drops(b"Keep-Alive"));
        assert!(!c.drops(b"x-other"));
        let many = b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q";
        assert!(!ConnectionOptions::default().add(many));
    }
}
