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
    /// What the input reads does not exist on this kernel or host (PSI before 4.20, KSM not
    /// built in): nothing is wrong, so it is logged once at debug level, not every interval.
    #[error("{0}")]
    Unsupported(String),
    /// The shared HTTP side could not set up or make a request (TLS files, no answer).
    #[error(transparent)]
    Http(#[from] crate::common::http::HttpError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<String> for GatherError {
    fn from(message: String) -> Self {
        GatherError::Other(message)
    }
}

impl From<&str> for GatherError {
    fn from(message: &str) -> Self {
        GatherError::Other(message.to_owned())
    }
}

impl GatherError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GatherError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for what this kernel or host does not have ([`GatherError::Unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, GatherError::Unsupported(_))
    }

    /// The outcome of a gather that met `errors` and carried on: none is success, one is
    /// itself, several are one error listing them all.
    pub fn all(mut errors: Vec<GatherError>) -> Result<(), GatherError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(GatherError::Other(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
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
