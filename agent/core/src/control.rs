//! How a running program is told to reload or stop: `main.rs` turns signals into [`Control`]
//! messages ([`forward_signals`]); tests send them directly to the library's `run`.

use tokio::sync::mpsc;

/// What a daemon is told from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration; apply it only if it loads (SIGHUP).
    Reload,
    /// Finish the current work and stop (SIGTERM, SIGINT).
    Stop,
}

/// Turns SIGHUP into [`Control::Reload`] and SIGTERM/SIGINT into [`Control::Stop`], sent on
/// `tx` from a task of the current runtime (the first Stop ends it).
pub fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Stop,
                _ = int.recv() => Control::Stop,
            };
            if tx.send(c).await.is_err() || c == Control::Stop {
                return;
            }
        }
    });
    Ok(())
}
