//! Route table: owns mapping a normalized request path to the configured
//! route with the longest matching path prefix.
//!
//! Stored as a trie over path segments so lookup cost depends on the depth of
//! the request path, not on the number of routes, and never allocates.
//! Matching is ASCII case-insensitive because some backends (and file
//! systems) treat paths that way; a case-sensitive matcher would let
//! "/ADMIN" slip past a rule written for "/admin".

use crate::http::path::{is_pchar_raw, param_start};

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// The prefix does not start with '/'.
    NotAbsolute(String),
    /// The prefix (after trailing-slash and case folding) is already routed.
    Duplicate(String),
    /// The prefix has a segment that no normalized path could ever contain.
    BadPrefix(String),
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::NotAbsolute(p) => write!(f, "route prefix {p:?} does not start with '/'"),
            RouterError::Duplicate(p) => write!(f, "route prefix {p:?} is already defined"),
            RouterError::BadPrefix(p) => write!(f, "route prefix {p:?} is not a valid path prefix"),
        }
    }
}

impl std::error::Error for RouterError {}

#[derive(Debug)]
struct Node<T> {
    /// Lowercased segment bytes; empty only for the root.
    seg: Box<[u8]>,
    value: Option<T>,
    /// Sorted by `seg` so lookup can binary-search.
    children: Vec<Node<T>>,
}

impl<T> Node<T> {
    fn new(seg: Box<[u8]>) -> Self {
        Node { seg, value: None, children: Vec::new() }
    }

    /// Binary search among children; `seg` may be in any case.
    fn find(&self, seg: &[u8]) -> Result<usize, usize> {
        self.children.binary_search_by(|child| cmp_folded(&child.seg, seg))
    }
}

/// Compares an already-lowercased key with a segment of any case without
/// allocating a lowercased copy.
fn cmp_folded(lower: &[u8], seg: &[u8]) -> Ordering {
    lower.iter().copied().cmp(seg.iter().map(u8::to_ascii_lowercase))
}

#[derive(Debug)]
pub struct Router<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Router { root: Node::new(Box::default()), len: 0 }
    }

    /// `prefix` must start with '/'; a trailing '/' (other than the root "/") is dropped so "/app1/" == "/app1".
    /// Segments in the prefix must not contain '?', '#', '%', or be "." / ".." / empty (BadPrefix). Same prefix twice -> Duplicate.
    ///
    /// Prefixes are compared case-insensitively, so "/App1" duplicates "/app1".
    pub fn insert(&mut self, prefix: &str, value: T) -> Result<(), RouterError> {
        let segments = split_prefix(prefix)?;
        // Validated in full before touching the trie so a rejected prefix
        // leaves no empty intermediate nodes behind.
        let mut node = &mut self.root;
        for seg in segments {
            let idx = match node.find(seg) {
                Ok(idx) => idx,
                Err(idx) => {
                    let key = seg.to_ascii_lowercase().into_boxed_slice();
                    node.children.insert(idx, Node::new(key));
                    idx
                }
            };
            // In bounds: `idx` came from a successful search or was just inserted.
            node = &mut node.children[idx];
        }
        if node.value.is_some() {
            return Err(RouterError::Duplicate(prefix.to_string()));
        }
        node.value = Some(value);
        self.len += 1;
        Ok(())
    }

    /// Longest-prefix match on an already-normalized path (starts with '/', no empty/dot segments, no query).
    ///
    /// A prefix matches when the path equals it or continues with '/': "/app1" matches "/app1", "/app1/",
    /// "/app1/x", but not "/app10". Matching is ASCII case-insensitive, and a segment ends at its first
    /// `;` (raw or `%3B`) for matching: "/admin;x", "/admin;/x" and "/admin%3Bx" match "/admin", because
    /// Tomcat, Jetty, Spring and others strip such parameters before they route.
    ///
    /// Returns the value and how many leading bytes of `path` the prefix covers, so `path[n..]` is the
    /// remainder to forward when stripping (empty means forward "/"). The root route covers 0 bytes.
    pub fn lookup(&self, path: &[u8]) -> Option<(&T, usize)> {
        let rest = path.strip_prefix(b"/")?;
        let mut node = &self.root;
        let mut best = node.value.as_ref().map(|v| (v, 0));
        // Offset in `path` of the start of the current segment.
        let mut start = 1;
        for seg in rest.split(|&b| b == b'/') {
            // An empty segment only appears for a trailing '/' in a
            // normalized path; nothing deeper can match.
            if seg.is_empty() {
                break;
            }
            let name = &seg[..param_start(seg)];
            if name.is_empty() {
                break;
            }
            let Ok(idx) = node.find(name) else { break };
            let Some(child) = node.children.get(idx) else {
                break;
            };
            node = child;
            let end = start + seg.len();
            if let Some(v) = node.value.as_ref() {
                best = Some((v, end));
            }
            start = end + 1;
        }
        best
    }

    /// Number of routes inserted.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Validates `prefix` and returns its segments (none for the root).
fn split_prefix(prefix: &str) -> Result<Vec<&[u8]>, RouterError> {
    let bytes = prefix.as_bytes();
    let Some(body) = bytes.strip_prefix(b"/") else {
        return Err(RouterError::NotAbsolute(prefix.to_string()));
    };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let body = body.strip_suffix(b"/").unwrap_or(body);
    let segments: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
    if segments.iter().all(|s| valid_segment(s)) {
        Ok(segments)
    } else {
        Err(RouterError::BadPrefix(prefix.to_string()))
    }
}

/// A segment is valid when a normalized path could contain it verbatim:
/// non-empty, not a dot-segment, raw pchar bytes only, no `;` (a path's
/// segment ends at its `;` for matching, so a prefix with one could never
/// match). '%' is refused because
/// escapes in routes invite mismatches with the normalizer's escape form, and
/// any other non-pchar byte (space, '?', '#', ...) would make a route that can
/// never match, which is better reported at configuration time.
fn valid_segment(seg: &[u8]) -> bool {
    !seg.is_empty() && seg != b"." && seg != b".." && seg.iter().all(|&b| is_pchar_raw(b) && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Router<&'static str> {
        let mut r = Router::new();
        r.insert("/", "all").unwrap();
        r.insert("/app1", "a1").unwrap();
        r.insert("/app2", "a2").unwrap();
        r.insert("/admin", "deny").unwrap();
        r
    }

    fn get<'a>(r: &'a Router<&'static str>, path: &str) -> Option<(&'a str, usize)> {
        r.lookup(path.as_bytes()).map(|(v, n)| (*v, n))
    }

    #[test]
    fn seed_table() {
        let r = seed();
        assert_eq!(r.len(), 4);
        assert!(!r.is_empty());
        let cases = [
            ("/", "all", 0),
            ("/x", "all", 0),
            ("/app1", "a1", 5),
            ("/app1/", "a1", 5),
            ("/app1/x", "a1", 5),
            ("/app10", "all", 0),
            ("/APP1/x", "a1", 5),
            ("/app2/y/z", "a2", 5),
            ("/admin", "deny", 6),
            ("/Admin/", "deny", 6),
            ("/ADMIN", "deny", 6),
            ("/admin/x", "deny", 6),
            ("/administrator", "all", 0),
        ];
        for (path, want, n) in cases {
            assert_eq!(get(&r, path), Some((want, n)), "path {path:?}");
        }
    }

    #[test]
    fn longest_nested_prefix_wins() {
        let mut r = Router::new();
        r.insert("/a/b", "ab").unwrap();
        r.insert("/a", "a").unwrap();
        r.insert("/a/b/c", "abc").unwrap();
        assert_eq!(get(&r, "/a"), Some(("a", 2)));
        assert_eq!(get(&r, "/a/x"), Some(("a", 2)));
        assert_eq!(get(&r, "/a/b"), Some(("ab", 4)));
        assert_eq!(get(&r, "/a/b/cd"), Some(("ab", 4)));
        assert_eq!(get(&r, "/a/b/c"), Some(("abc", 6)));
        assert_eq!(get(&r, "/A/B/C/d/e"), Some(("abc", 6)));
        assert_eq!(get(&r, "/b"), None);
    }

    #[test]
    fn intermediate_nodes_without_values_do_not_match() {
        let mut r = Router::new();
        r.insert("/a/b/c", "abc").unwrap();
        assert_eq!(get(&r, "/a/b"), None);
        assert_eq!(get(&r, "/a/b/"), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn no_root_route() {
        let mut r = Router::new();
        r.insert("/app1", 1).unwrap();
        assert_eq!(r.lookup(b"/zzz"), None);
        assert_eq!(r.lookup(b"/"), None);
        assert_eq!(r.lookup(b""), None);
        assert_eq!(r.lookup(b"app1"), None);
    }

    #[test]
    fn empty_router() {
        let r: Router<u8> = Router::default();
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
        assert_eq!(r.lookup(b"/"), None);
    }

    #[test]
    fn strip_lengths() {
        let mut r = Router::new();
        r.insert("/strip/", "s").unwrap();
        r.insert("/", "root").unwrap();
        let path = "/strip/echo";
        let (_, n) = r.lookup(path.as_bytes()).unwrap();
        assert_eq!((n, &path[n..]), (6, "/echo"));
        let (_, n) = r.lookup(b"/strip").unwrap();
        assert_eq!(n, 6);
        let (_, n) = r.lookup(b"/strip/").unwrap();
        assert_eq!(n, 6);
        let (v, n) = r.lookup(b"/other").unwrap();
        assert_eq!((*v, n), ("root", 0));
    }

    #[test]
    fn many_siblings_sorted() {
        let mut r = Router::new();
        let names: Vec<String> = (0..200).rev().map(|i| format!("/s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            r.insert(name, i).unwrap();
        }
        for (i, name) in names.iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            assert_eq!(r.lookup(upper.as_bytes()), Some((&i, name.len())));
        }
        assert_eq!(r.lookup(b"/s200"), None);
    }

    #[test]
    fn duplicates() {
        let mut r = seed();
        let dup = |p: &str| RouterError::Duplicate(p.to_string());
        assert_eq!(r.insert("/app1", "x"), Err(dup("/app1")));
        assert_eq!(r.insert("/app1/", "x"), Err(dup("/app1/")));
        assert_eq!(r.insert("/App1", "x"), Err(dup("/App1")));
        assert_eq!(r.insert("/ADMIN/", "x"), Err(dup("/ADMIN/")));
        assert_eq!(r.insert("/", "x"), Err(dup("/")));
        assert_eq!(r.len(), 4);
        // The original value survives a rejected duplicate.
        assert_eq!(get(&r, "/app1"), Some(("a1", 5)));
    }

    #[test]
    fn bad_prefixes() {
        let mut r: Router<u8> = Router::new();
        for p in ["app1", "", "*", "http://x/"] {
            assert_eq!(r.insert(p, 0), Err(RouterError::NotAbsolute(p.to_string())), "{p:?}");
        }
        let bad = [
            "//", "/a//b", "/a//", "/.", "/..", "/a/./b", "/a/../b", "/a?", "/a#b", "/a%20b", "/%61", "/a b", "/a\\b",
            "/é", "/a;b", "/;",
        ];
        for p in bad {
            assert_eq!(r.insert(p, 0), Err(RouterError::BadPrefix(p.to_string())), "{p:?}");
        }
        assert!(r.is_empty());
        // Rejections must not leave valueless nodes that change later behaviour.
        assert_eq!(r.root.children.len(), 0);
        r.insert("/...", 1).unwrap();
        r.insert("/a:b@c~", 2).unwrap();
        assert_eq!(r.lookup(b"/.../x"), Some((&1, 4)));
        assert_eq!(r.lookup(b"/A:B@C~"), Some((&2, 7)));
    }

    /// Issue 11, class 2: every form of a path parameter on `/admin`
    /// reaches the `/admin` route (backends such as Tomcat strip them).
    #[test]
    fn path_parameters_do_not_escape_a_prefix() {
        let r = seed();
        for path in ["/admin;x", "/admin;/x", "/admin;", "/admin;v=1/", "/admin%3Bx", "/admin%3bx", "/ADMIN;x/y"] {
            let mut norm = Vec::new();
            crate::http::path::normalize_path(path.as_bytes(), &mut norm).expect("normalizes");
            assert_eq!(
                r.lookup(&norm).map(|(v, _)| *v),
                Some("deny"),
                "{path:?} -> {:?}",
                String::from_utf8_lossy(&norm)
            );
        }
        // The matched length covers the parameters, so a stripped prefix
        // leaves only what follows the segment.
        assert_eq!(get(&r, "/app1;jsessionid=1/x"), Some(("a1", 18)));
        assert_eq!(get(&r, "/app10;x"), Some(("all", 0)));
    }

    /// The property the fuzz target also checks: inserting `;Q` after any
    /// segment of any path never changes the route it takes.
    #[test]
    fn parameters_never_change_the_route() {
        let mut r = Router::new();
        for (i, p) in ["/", "/a", "/a/b", "/b", "/a/b/c", "/c/d"].iter().enumerate() {
            r.insert(p, i).unwrap();
        }
        let route = |path: &[u8]| -> Option<Option<usize>> {
            let mut norm = Vec::new();
            crate::http::path::normalize_path(path, &mut norm).ok()?;
            Some(r.lookup(&norm).map(|(v, _)| *v))
        };
        let atoms: [&[u8]; 10] = [b"a", b"b", b"c", b"d", b".", b"..", b"", b"A", b"%61", b"x"];
        let params: [&[u8]; 8] = [b"", b"x", b"v=1", b";", b"%3B", b"..", b"a=b;c", b"%3bq"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..5000 {
            let segs: Vec<&[u8]> = (0..1 + next(5)).map(|_| atoms[next(atoms.len())]).collect();
            let path: Vec<u8> = segs.iter().flat_map(|s| [&b"/"[..], s].concat()).collect();
            let Some(want) = route(&path) else { continue };
            for at in 0..segs.len() {
                let mut with = Vec::new();
                for (i, s) in segs.iter().enumerate() {
                    with.push(b'/');
                    with.extend_from_slice(s);
                    if i == at {
                        with.push(if next(2) == 0 { b';' } else { b'%' });
                        if with.last() == Some(&b'%') {
                            with.extend_from_slice(if next(2) == 0 { b"3B" } else { b"3b" });
                        }
                        with.extend_from_slice(params[next(params.len())]);
                    }
                }
                assert_eq!(
                    route(&with),
                    Some(want),
                    "{:?} vs {:?}",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(&with)
                );
            }
        }
    }

    #[test]
    fn odd_lookup_inputs_do_not_panic() {
        let r = seed();
        for p in [&b""[..], b"/", b"//", b"///app1", b"/app1//x", b"/\xff\xfe", b"/app1?x"] {
            let _ = r.lookup(p);
        }
        assert_eq!(get(&r, "/app1?x"), Some(("all", 0)));
    }
}
