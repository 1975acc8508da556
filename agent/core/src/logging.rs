//! Logging set-up shared by both programs: to stderr, colours only on a terminal, level from
//! the flags unless `WK_LOG` (an `EnvFilter` spec such as `debug` or `wk_alerter=debug`) says
//! otherwise.
//!
//! Log lines carry data from hosts (tag values, messages, server replies): a newline in such a
//! value would forge a line of its own. Every control character inside a line is written
//! escaped (`\n`, `\r`, `\x1b`, …), so one event is always one line.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

type SetLevel = Box<dyn Fn(&str) + Send + Sync>;

/// Changes the installed subscriber's level (see [`set_level`]).
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// Installs the global subscriber at `level` ("debug", "info", "error", …).
pub fn init(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WK_LOG").unwrap_or_else(|_| level.into());
    let ansi = io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || EscapingStderr { ansi })
        .with_ansi(ansi)
        .with_target(false)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    let _ = SET_LEVEL.set(Box::new(move |level: &str| {
        let _ = handle.reload(tracing_subscriber::EnvFilter::new(level));
    }));
    builder.init();
}

/// Sets the level after [`init`] (a config file's `debug`/`quiet`, read once the flags have
/// set the first level), unless `WK_LOG` chose it.
pub fn set_level(level: &str) {
    if std::env::var_os("WK_LOG").is_some() {
        return;
    }
    if let Some(set) = SET_LEVEL.get() {
        set(level);
    }
}

/// Stderr that escapes control characters inside each formatted event (the formatter writes
/// one whole event, ending in its newline, per call).
struct EscapingStderr {
    ansi: bool,
}

impl Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr()
            .lock()
            .write_all(&escape_line(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `buf` with every control character but a final newline (and tabs, and the escape
/// character of colours when `ansi`) written as `\n`, `\r` or `\xNN`.
pub fn escape_line(buf: &[u8], ansi: bool) -> Vec<u8> {
    let (body, newline) = match buf.split_last() {
        Some((b'\n', rest)) => (rest, true),
        _ => (buf, false),
    };
    let mut out = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0x1b if ansi => out.push(b),
            c if c < 0x20 || c == 0x7f => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
            c => out.push(c),
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_in_data_cannot_forge_a_log_line() {
        let event = b"WARN alert web1: disk full\nERROR forged line\r\x1b[31m\n";
        let out = escape_line(event, false);
        assert_eq!(
            out,
            b"WARN alert web1: disk full\\nERROR forged line\\r\\x1b[31m\n".to_vec()
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        // Colours stay colours on a terminal; tabs stay.
        assert_eq!(
            escape_line(b"\x1b[1mX\tY\n", true),
            b"\x1b[1mX\tY\n".to_vec()
        );
    }
}
