//! `[[notifiers.log]]`: one JSON line per event (the event as serialized), appended to a file
//! or written to stderr (Kapacitor's `log` handler).

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use wk_core::options::Options;

use super::{Notifier, NotifierSpec, NotifyError, SendFuture};
use crate::model::AlertEvent;

/// Registry entry.
pub const SPEC: NotifierSpec = NotifierSpec {
    name: "log",
    description: "Append each event as one JSON line to a file (or stderr)",
    sample_config: include_str!("sample.conf"),
    build,
};

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

/// The log notifier.
#[derive(Debug, Clone)]
pub struct LogNotifier {
    pub target: Target,
    /// Permission bits of a file this notifier creates.
    pub mode: u32,
}

fn build(opts: &mut Options<'_, '_>) -> Box<dyn Notifier> {
    let file = opts.string("file", "stderr");
    let target = match file.as_str() {
        "" => {
            opts.error_at("file", "must be a path or \"stderr\"");
            Target::Stderr
        }
        "stderr" => Target::Stderr,
        path => Target::File(PathBuf::from(path)),
    };
    let mode_text = opts.string("mode", "0640");
    let mode = match u32::from_str_radix(mode_text.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 => m,
        _ => {
            opts.error_at(
                "mode",
                format!("invalid mode {mode_text:?}: expected octal permissions such as \"0640\""),
            );
            0o640
        }
    };
    Box::new(LogNotifier { target, mode })
}

impl LogNotifier {
    async fn write(&self, event: &AlertEvent) -> Result<(), NotifyError> {
        let mut line = serde_json::to_vec(event)
            .map_err(|e| NotifyError::Permanent(format!("cannot serialize the event: {e}")))?;
        line.push(b'\n');
        match &self.target {
            Target::Stderr => {
                // One short write of a whole line; stderr is unbuffered and shared with the
                // alerter's own log, which writes whole lines too.
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                err.write_all(&line)
                    .and_then(|()| err.flush())
                    .map_err(|e| NotifyError::Retryable(format!("stderr: {e}")))
            }
            Target::File(path) => {
                // Opened per event so that log rotation (rename + new file) needs no signal;
                // one write_all of a whole line to an O_APPEND file keeps lines whole.
                let io =
                    |e: std::io::Error| NotifyError::Retryable(format!("{}: {e}", path.display()));
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(self.mode)
                    .open(path)
                    .await
                    .map_err(io)?;
                f.write_all(&line).await.map_err(io)?;
                f.flush().await.map_err(io)
            }
        }
    }
}

impl Notifier for LogNotifier {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(self.write(event))
    }
}
