//! Diagnostics that name the file, line and column of a config problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error with its causes, `outer: cause: root cause` (reqwest says only "error sending
/// request"; the cause says "Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some layers repeat their cause in their own text.
        if !s.ends_with(&text) {
            s += ": ";
            s += &text;
        }
        cur = c.source();
    }
    s
}

/// How bad a diagnostic is: warnings let the config load, errors reject it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not tied to a place in the file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {sev}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {sev}: {}", self.file.display(), self.message)
        }
    }
}

/// A config file's text with a byte-offset → line/column map.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps a file's text.
    pub fn new(path: impl AsRef<Path>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Source {
            path: path.as_ref().to_path_buf(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset.min(self.text.len()))
            // An editor does not show a byte-order mark: do not count it.
            .map_or(1, |s| s.chars().filter(|c| *c != '\u{feff}').count() + 1);
        (line, col)
    }

    /// The error for text that does not parse as TOML, where the parser stopped.
    pub fn toml_error(&self, e: &toml::de::Error) -> Diag {
        let offset = e.span().map_or(0, |s| s.start);
        let message = format!("invalid TOML: {}", e.message().trim_end());
        self.diag(Severity::Error, offset, message)
    }

    /// A diagnostic at a byte offset.
    pub fn diag(&self, severity: Severity, offset: usize, message: impl Into<String>) -> Diag {
        let (line, column) = self.line_col(offset);
        Diag {
            severity,
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Warnings and errors collected while loading; loading goes on after an error so that one run
/// reports every problem.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diag>,
}

impl Diagnostics {
    /// Adds a diagnostic.
    pub fn push(&mut self, d: Diag) {
        self.items.push(d);
    }

    /// True when at least one error was found.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diag> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diag> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }
}

/// The config did not load: every error found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<Diag>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let s = Source::new("f.conf", "ab\ncdé\n\nx".to_owned());
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(1), (1, 2));
        assert_eq!(s.line_col(3), (2, 1));
        assert_eq!(s.line_col(7), (2, 4));
        assert_eq!(s.line_col(9), (4, 1));
        let s = Source::new("f.conf", "\u{feff}[x]".to_owned());
        assert_eq!(s.line_col(3), (1, 1));
        assert_eq!(s.line_col(4), (1, 2));
    }
}
