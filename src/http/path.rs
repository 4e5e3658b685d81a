//! Request-path normalization: owns turning the raw origin-form path of a
//! request target into the single canonical form that is both routed on and
//! forwarded, so the route decision and the backend's view of the path agree.
//!
//! Backends commonly decode unreserved escapes, merge slashes and resolve dot
//! segments themselves; doing all of that here (and refusing anything
//! ambiguous) closes the gap an attacker could use to reach a route that the
//! proxy thought it had denied.

use std::fmt;

/// Why a request path cannot be normalized (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with '/' (empty, asterisk-form, absolute-form, ...).
    NotOriginForm,
    /// '%' not followed by exactly two hex digits.
    BadEscape,
    /// `%00`.
    EncodedNul,
    /// `%2F` or `%5C`.
    EncodedSeparator,
    /// A raw '\'.
    Backslash,
    /// A `..` segment that would climb above the root.
    AboveRoot,
    /// A '#'; fragments are never sent by well-behaved clients.
    Fragment,
    /// Any other byte outside RFC 3986 pchar and '/'.
    BadByte,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            PathError::NotOriginForm => "path is not in origin form",
            PathError::BadEscape => "malformed percent escape",
            PathError::EncodedNul => "encoded NUL in path",
            PathError::EncodedSeparator => "encoded path separator",
            PathError::Backslash => "backslash in path",
            PathError::AboveRoot => "dot-segment climbs above root",
            PathError::Fragment => "fragment in request target",
            PathError::BadByte => "disallowed byte in path",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for PathError {}

/// Normalizes `path` (the target up to but excluding '?'; the caller splits the query) into `out` (cleared first).
///
/// On error `out` is left empty so a caller cannot accidentally forward a
/// half-normalized path.
pub fn normalize_path(path: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    out.clear();
    let result = normalize_into(path, out);
    if result.is_err() {
        out.clear();
    }
    result
}

fn normalize_into(path: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    // Checked up front so a fragment is reported as such regardless of what
    // other defects precede it.
    if path.contains(&b'#') {
        return Err(PathError::Fragment);
    }
    // Normalization only ever shrinks or keeps the length (escapes are
    // either decoded to one byte or kept at three), so one reservation holds.
    out.reserve(path.len());
    out.push(b'/');

    let mut i = 1;
    while i <= path.len() {
        // `out` always ends with '/' here; the segment is written after it.
        let seg_start = out.len();
        while let Some(&b) = path.get(i) {
            if b == b'/' {
                break;
            }
            i += push_byte(path, i, out)?;
        }
        let more = i < path.len();
        // Skip the separator (or step past the end to finish the loop).
        i += 1;

        let seg = out.get(seg_start..).unwrap_or(&[]);
        // A segment is judged by its part before any `;` parameters, as
        // Tomcat, Jetty and Spring judge it: `..;x` climbs like `..` there,
        // so it must here too, or `/app1/..;/admin` would route as /app1.
        let name = &seg[..param_start(seg)];
        if name.is_empty() {
            // Repeated or trailing slash (or `/;x/`, which such a backend
            // reads as `//`): the '/' already in `out` covers it.
            out.truncate(seg_start);
            continue;
        }
        if name == b"." {
            out.truncate(seg_start);
            continue;
        }
        if name == b".." {
            out.truncate(seg_start);
            // seg_start == 1 means `out` is just "/": nothing left to pop.
            if seg_start <= 1 {
                return Err(PathError::AboveRoot);
            }
            // Drop the previous segment, keeping the '/' that precedes it.
            let prev_end = seg_start - 1;
            let cut = out.get(..prev_end).and_then(|s| s.iter().rposition(|&c| c == b'/')).map_or(1, |p| p + 1);
            out.truncate(cut);
            continue;
        }
        if more {
            out.push(b'/');
        }
    }
    Ok(())
}

/// Writes the (possibly decoded) byte(s) at `path[i]` and returns how many
/// input bytes were consumed.
fn push_byte(path: &[u8], i: usize, out: &mut Vec<u8>) -> Result<usize, PathError> {
    let b = path.get(i).copied().unwrap_or(0);
    if b == b'%' {
        let hi = path.get(i + 1).copied().and_then(hex_val);
        let lo = path.get(i + 2).copied().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadEscape);
        };
        let decoded = (hi << 4) | lo;
        match decoded {
            0 => return Err(PathError::EncodedNul),
            // A backend that decodes these after routing would see a
            // different segment structure than we routed on.
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            _ if is_unreserved(decoded) => out.push(decoded),
            _ => out.extend_from_slice(&[b'%', HEX_UPPER[hi as usize], HEX_UPPER[lo as usize]]),
        }
        return Ok(3);
    }
    if b == b'\\' {
        return Err(PathError::Backslash);
    }
    if !is_pchar_raw(b) {
        return Err(PathError::BadByte);
    }
    out.push(b);
    Ok(1)
}

/// Where a segment's `;` parameters start (its length if it has none): at
/// the first `;`, raw or percent-encoded in either case, since some
/// backends decode `%3B` before they strip parameters.
pub fn param_start(seg: &[u8]) -> usize {
    let mut i = 0;
    while i < seg.len() {
        match seg[i] {
            b';' => return i,
            b'%' if seg.get(i + 1) == Some(&b'3') && matches!(seg.get(i + 2), Some(b'b' | b'B')) => return i,
            _ => i += 1,
        }
    }
    seg.len()
}

/// Whether a raw path has a `;` parameter anywhere (`[http] path_params =
/// "refuse"`).
pub fn has_params(path: &[u8]) -> bool {
    param_start(path) < path.len()
}

const HEX_UPPER: [u8; 16] = *b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 pchar minus pct-encoded (handled separately).
pub fn is_pchar_raw(b: u8) -> bool {
    is_unreserved(b)
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        let mut out = Vec::new();
        normalize_path(p.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn ok(input: &str, expected: &str) {
        assert_eq!(norm(input), Ok(expected.to_string()), "input {input:?}");
    }

    fn err(input: &str, e: PathError) {
        assert_eq!(norm(input), Err(e), "input {input:?}");
    }

    #[test]
    fn merges_slashes() {
        ok("//admin", "/admin");
        ok("/a///b", "/a/b");
        ok("//", "/");
        ok("/a//", "/a/");
    }

    #[test]
    fn decodes_unreserved_escapes() {
        ok("/%61dmin", "/admin");
        ok("/%41dmin", "/Admin");
        ok("/%7E", "/~");
        ok("/%7e%2D%5f", "/~-_");
    }

    #[test]
    fn keeps_other_escapes_uppercased() {
        ok("/%3a", "/%3A");
        ok("/%3A", "/%3A");
        ok("/a%20b", "/a%20b");
        ok("/%ff%25", "/%FF%25");
        ok("/%2561", "/%2561");
    }

    #[test]
    fn resolves_dot_segments() {
        ok("/./admin", "/admin");
        ok("/app1/../admin", "/admin");
        ok("/app1/%2e%2e/admin", "/admin");
        ok("/app1/%2E%2E/admin", "/admin");
        ok("/app1/.%2e/admin", "/admin");
        ok("/app1/%2e/admin", "/app1/admin");
        ok("/a/.", "/a/");
        ok("/a/..", "/");
        ok("/a/b/..", "/a/");
        ok("/.", "/");
        ok("/a//b/./c/..", "/a/b/");
        ok("/a/b/../../c", "/c");
        ok("/a/./", "/a/");
        ok("/...", "/...");
        ok("/.a/..b", "/.a/..b");
    }

    #[test]
    fn unchanged_paths() {
        ok("/", "/");
        ok("/admin/x", "/admin/x");
        ok("/ADMIN", "/ADMIN");
        ok("/Admin/", "/Admin/");
        ok("/a:b@c!$&'()*+,;=-._~", "/a:b@c!$&'()*+,;=-._~");
    }

    #[test]
    fn rejects_above_root() {
        err("/..", PathError::AboveRoot);
        err("/../x", PathError::AboveRoot);
        err("/a/../../x", PathError::AboveRoot);
        err("/%2e%2e", PathError::AboveRoot);
    }

    #[test]
    fn rejects_bad_escapes() {
        err("/%00", PathError::EncodedNul);
        err("/%zz", PathError::BadEscape);
        err("/%4", PathError::BadEscape);
        err("/%", PathError::BadEscape);
        err("/%4/", PathError::BadEscape);
        err("/a%2Fb", PathError::EncodedSeparator);
        err("/a%2fb", PathError::EncodedSeparator);
        err("/a%5Cb", PathError::EncodedSeparator);
        err("/a%5cb", PathError::EncodedSeparator);
    }

    #[test]
    fn rejects_bad_bytes() {
        err("/a\\b", PathError::Backslash);
        err("/a#b", PathError::Fragment);
        err("/a b#c", PathError::Fragment);
        err("/a b", PathError::BadByte);
        for b in [b'"', b'<', b'>', b'^', b'`', b'{', b'|', b'}', b'?', 0x7f, 0x00, b'\t', 0x80, 0xff] {
            let mut out = vec![9];
            assert_eq!(normalize_path(&[b'/', b], &mut out), Err(PathError::BadByte), "byte {b:#x}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn rejects_non_origin_form() {
        err("", PathError::NotOriginForm);
        err("*", PathError::NotOriginForm);
        err("http://x/", PathError::NotOriginForm);
        err("a/b", PathError::NotOriginForm);
    }

    #[test]
    fn clears_previous_output() {
        let mut out = b"garbage".to_vec();
        normalize_path(b"/x", &mut out).unwrap();
        assert_eq!(out, b"/x");
    }

    fn has_lowercase_hex_escape(s: &[u8]) -> bool {
        s.iter()
            .enumerate()
            .any(|(i, &b)| b == b'%' && s[i + 1..(i + 3).min(s.len())].iter().any(u8::is_ascii_lowercase))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn random_inputs_hold_invariants() {
        const ALPHABET: &[u8] = b"/.%2eEaA0Ff\\#";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut out, mut again) = (Vec::new(), Vec::new());
        let mut oks = 0;
        for _ in 0..20_000 {
            let len = (next() % 16) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            // Most inputs should be origin-form so the interesting paths get exercised.
            if next() % 8 != 0 {
                input.insert(0, b'/');
            }
            if normalize_path(&input, &mut out).is_err() {
                assert!(out.is_empty());
                continue;
            }
            oks += 1;
            assert_eq!(out.first(), Some(&b'/'), "{input:?}");
            assert!(out.len() <= input.len());
            assert!(!contains(&out, b"//"), "{input:?} -> {out:?}");
            assert!(!contains(&out, b"/./") && !out.ends_with(b"/."), "{input:?}");
            assert!(!contains(&out, b"/../") && !out.ends_with(b"/.."), "{input:?}");
            assert!(!has_lowercase_hex_escape(&out), "{input:?} -> {out:?}");
            normalize_path(&out, &mut again).unwrap();
            assert_eq!(again, out, "not idempotent for {input:?}");
        }
        assert!(oks > 1_000, "too few successful inputs: {oks}");
    }
}
