//! Why a gather failed: the error type of the plugin contract, a leaf every input, the host
//! paths and the collection loop share.

use std::path::PathBuf;

/// Why a gather failed.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file was read but its content made no sense; names the file and line.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl GatherError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GatherError::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error on `path` at 1-based `line` (0 when not tied to a line).
    pub fn malformed(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        GatherError::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
