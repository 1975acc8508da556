//! Logging set-up shared by both programs: to stderr, colours only on a terminal, level from
//! the flags unless `WK_LOG` (an `EnvFilter` spec such as `debug` or `wk_alerter=debug`) says
//! otherwise.

use std::io::IsTerminal;

/// Installs the global subscriber at `level` ("debug", "info", "error", …).
pub fn init(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WK_LOG").unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
