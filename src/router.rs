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

/// Why a route prefix was refused.
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

#[derive(Debug, Clone)]
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

/// Route prefixes in a trie of path segments, one level per segment, for
/// longest-prefix lookup.
#[derive(Debug, Clone)]
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
    /// A router with no routes.
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

    /// Whether no route was inserted.
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
mod tests;
