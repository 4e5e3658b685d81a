//! Configuration errors that point at the file, line and key at fault.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the text.
    pub line: Option<(usize, usize)>,
    pub key: Option<String>,
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// The dotted key written on the line holding `offset`, under the nearest
/// table header above it. `toml` reports the position of a bad value or key
/// but not its name, so we read it back from the text.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_owned());
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        let inner = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
        inner.or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']'))).map(str::trim)
    });
    match (table, key) {
        (Some(t), Some(k)) if !k.is_empty() && !k.starts_with('{') => Some(format!("{t}.{k}")),
        (None, Some(k)) if !k.is_empty() && !k.starts_with('{') => Some(k),
        (Some(t), _) => Some(t.to_owned()),
        _ => None,
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
