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

    pub(super) fn at(file: &Path, text: &str, offset: Option<usize>, key: Option<&str>, message: impl Into<String>) -> Self {
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
