//! Configuration errors that point at the file, line and key at fault.

use super::raw::RawRoute;
use super::Builder;
use crate::router::{Router, RouterError};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Why a config was refused, and where: `FILE:LINE:COL: key KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the text.
    pub line: Option<(usize, usize)>,
    /// The dotted key at fault (`upstreams.a.servers`), when known.
    pub key: Option<String>,
    /// What is wrong, in plain words.
    pub message: String,
}

impl ConfigError {
    pub(super) fn io(file: &Path, message: String) -> Self {
        ConfigError { file: file.to_path_buf(), line: None, key: None, message }
    }

    pub(super) fn at(
        file: &Path,
        text: &str,
        offset: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: offset.map(|o| line_col(text, o)),
            key: key.map(str::to_owned),
            message: message.into().trim_end().to_owned(),
        }
    }
}

impl Builder<'_> {
    /// The error for a route whose `prefix` the router refused, pointing at
    /// that prefix. A duplicate says which earlier route it duplicates and
    /// where that one is: the two may be spelled differently (`/App1/` and
    /// `/app1`), since prefixes are compared ignoring case and a final '/'.
    pub(super) fn route_error(
        &self,
        e: RouterError,
        routes: &[Spanned<RawRoute>],
        prefix: &Spanned<String>,
    ) -> ConfigError {
        const KEY: &str = "listeners.routes.prefix";
        if let RouterError::Duplicate(_) = e {
            let first = routes
                .iter()
                .map(|r| &r.get_ref().prefix)
                .filter(|p| p.span().start < prefix.span().start)
                .find(|p| same_route(p.get_ref(), prefix.get_ref()));
            if let Some(first) = first {
                let (line, column) = line_col(self.text, first.span().start);
                let (this, that) = (prefix.get_ref(), first.get_ref());
                let mut msg = format!("route prefix {this:?} duplicates {that:?} (line {line}, column {column})");
                if this != that {
                    msg.push_str("; prefixes are compared ignoring case and a trailing '/'");
                }
                return self.err(prefix, KEY, msg);
            }
        }
        self.err(prefix, KEY, e.to_string())
    }
}

/// Whether the router takes `a` and `b` for the same route.
fn same_route(a: &str, b: &str) -> bool {
    let mut probe = Router::new();
    probe.insert(a, ()).is_ok() && matches!(probe.insert(b, ()), Err(RouterError::Duplicate(_)))
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// The dotted key or table at fault for an error `toml` reports at byte
/// `offset`: `toml` gives the position of a bad value, key or header but not
/// its name, so we read the document again, far enough to know what the byte
/// at `offset` belongs to.
///
/// The answer is the innermost of: a table header (`[limits` names `limits`,
/// even unclosed), a `key = value` (its value, and the rest of its line, name
/// `table.key`), an inline table (`listeners.routes` for a route written
/// `{ ... }`, wherever its array breaks lines). An array names nothing of its
/// own: an element belongs to the key the array is the value of. Anything
/// else (a header whose name is garbled, a line with no `=`, a comment)
/// names no key: better none than the table above it, which is not at fault.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let mut scan = Scan { s: text.as_bytes(), pos: 0, regions: Vec::new() };
    if scan.document().is_none() && line_col(text, offset).0 > line_col(text, scan.pos).0 {
        // We stopped reading on an earlier line than `toml` did: what
        // follows is unknown to us, so say nothing rather than guess.
        return None;
    }
    scan.regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.start <= offset && offset < r.end)
        .max_by_key(|&(i, r)| (r.start, i))
        .and_then(|(_, r)| r.key.clone())
}

/// Bytes `start..end` of the text belong to `key` (`None`: to no key we can
/// name). Regions nest; one still open when reading stops ends at `usize::MAX`.
struct Region {
    start: usize,
    end: usize,
    key: Option<String>,
}

/// A reader of just enough TOML to know which key each byte belongs to. It
/// stops (returns `None`) at the first thing it does not understand, which
/// for a syntax error is where `toml` stopped too; it never panics.
struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
    regions: Vec<Region>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, lit: &[u8]) -> bool {
        self.s.get(self.pos..).is_some_and(|rest| rest.starts_with(lit))
    }

    fn open(&mut self, start: usize, key: Option<String>) -> usize {
        self.regions.push(Region { start, end: usize::MAX, key });
        self.regions.len() - 1
    }

    fn close(&mut self, region: usize) {
        self.regions[region].end = self.pos;
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn comment(&mut self) {
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.pos += 1;
            }
        }
    }

    /// Blanks, comments and line breaks.
    fn gaps(&mut self) {
        loop {
            self.blanks();
            self.comment();
            match self.peek() {
                Some(b'\n' | b'\r') => self.pos += 1,
                _ => return,
            }
        }
    }

    /// The rest of a line: blanks, a comment, then a line break or the end.
    fn line_end(&mut self) -> Option<()> {
        self.blanks();
        self.comment();
        if self.at(b"\r\n") {
            self.pos += 2;
            return Some(());
        }
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.pos += 1;
                Some(())
            }
            Some(_) => None,
        }
    }

    fn document(&mut self) -> Option<()> {
        let mut table = Vec::new();
        loop {
            self.gaps();
            match self.peek() {
                None => return Some(()),
                Some(b'[') => table = self.header()?,
                Some(_) => {
                    let region = self.keyval(&table)?;
                    self.line_end()?;
                    self.close(region);
                }
            }
        }
    }

    /// `[name]` or `[[name]]` and the rest of its line. An unclosed header
    /// still names its table; one with garbage inside the brackets names none.
    fn header(&mut self) -> Option<Vec<String>> {
        let region = self.open(self.pos, None);
        let close: &[u8] = if self.at(b"[[") { b"]]" } else { b"]" };
        self.pos += close.len();
        let name = self.key()?;
        self.regions[region].key = Some(name.join("."));
        if !self.at(close) {
            if !matches!(self.peek(), None | Some(b'\n' | b'\r' | b'#' | b']')) {
                self.regions[region].key = None;
            }
            return None;
        }
        self.pos += close.len();
        self.line_end()?;
        self.close(region);
        Some(name)
    }

    /// A possibly dotted key, and the blanks after it.
    fn key(&mut self) -> Option<Vec<String>> {
        let mut parts = Vec::new();
        loop {
            self.blanks();
            let start = self.pos;
            let part = match self.peek()? {
                b'"' | b'\'' => {
                    self.string()?;
                    self.s.get(start + 1..self.pos - 1)?
                }
                _ => {
                    while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        self.pos += 1;
                    }
                    if self.pos == start {
                        return None;
                    }
                    &self.s[start..self.pos]
                }
            };
            parts.push(String::from_utf8_lossy(part).into_owned());
            self.blanks();
            if self.peek() != Some(b'.') {
                return Some(parts);
            }
            self.pos += 1;
        }
    }

    /// `key = value` under `prefix`; returns the region it opened, which the
    /// caller closes (at the end of the line, or of the value when inline).
    fn keyval(&mut self, prefix: &[String]) -> Option<usize> {
        let start = self.pos;
        let mut name = prefix.to_vec();
        name.extend(self.key()?);
        if self.peek() != Some(b'=') {
            return None;
        }
        self.pos += 1;
        let region = self.open(start, Some(name.join(".")));
        self.blanks();
        self.value(&name)?;
        Some(region)
    }

    fn value(&mut self, name: &[String]) -> Option<()> {
        match self.peek()? {
            b'"' | b'\'' => self.string(),
            b'[' => {
                self.pos += 1;
                loop {
                    self.gaps();
                    if self.peek()? != b']' {
                        self.value(name)?;
                        self.gaps();
                    }
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                let region = self.open(self.pos, Some(name.join(".")));
                self.pos += 1;
                loop {
                    self.blanks();
                    if self.peek()? != b'}' {
                        let kv = self.keyval(name)?;
                        self.close(kv);
                        self.blanks();
                    }
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b'}' => {
                            self.pos += 1;
                            self.close(region);
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.scalar(),
        }
    }

    /// A number, boolean or date-time (the one scalar that may hold a blank).
    fn scalar(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let date = &self.s[start..self.pos];
            let time_follows = self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit);
            let date_time_blank = b == b' ' && date.len() == 10 && date[4] == b'-' && date[7] == b'-' && time_follows;
            if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.' | b':') || date_time_blank) {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// A basic or literal string, single- or multi-line.
    fn string(&mut self) -> Option<()> {
        let quote = self.peek()?;
        let escapes = quote == b'"';
        let triple = [quote; 3];
        if self.at(&triple) {
            self.pos += 3;
            while !self.at(&triple) {
                self.pos += if escapes && self.peek()? == b'\\' { 2 } else { 1 };
            }
            self.pos += 3;
            // Up to two more quotes are content just before the closing ones.
            for _ in 0..2 {
                if self.peek() == Some(quote) {
                    self.pos += 1;
                }
            }
            return Some(());
        }
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\n' => return None,
                b'\\' if escapes => self.pos += 2,
                b if b == quote => {
                    self.pos += 1;
                    return Some(());
                }
                _ => self.pos += 1,
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
