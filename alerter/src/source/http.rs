//! One HTTP request from a synchronous caller, shared by the database sources.
//!
//! Rhai calls a source synchronously from inside a script, on a blocking thread. The request
//! itself runs on a tokio runtime with reqwest's async client: it is spawned on the runtime
//! handle the source was built with and waited for on a std channel. Unlike
//! `Handle::block_on` this never panics when called from inside a runtime, and unlike
//! `reqwest::blocking` it needs no private runtime (whose drop panics inside async code) and
//! shares the program's connection pool.

use std::sync::mpsc;
use std::time::Duration;

use super::SourceError;

/// A reqwest client with the whole-request `timeout`.
pub(crate) fn client(
    engine: &'static str,
    url: &str,
    timeout: Duration,
) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| SourceError::Connect {
            engine,
            url: url.to_owned(),
            message: format!("cannot build HTTP client: {e}"),
        })
}

/// Sends `req` on `runtime` and waits for the status and body; `engine` and `url` name the
/// server in errors.
pub(crate) fn send(
    engine: &'static str,
    url: &str,
    timeout: Duration,
    runtime: &tokio::runtime::Handle,
    req: reqwest::RequestBuilder,
) -> Result<(u16, bytes::Bytes), SourceError> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        // The receiver only goes away if the caller is gone; nothing to report then.
        let _ = tx.send(result);
    });
    let timed_out = || SourceError::Timeout {
        engine,
        url: url.to_owned(),
        timeout_ms: timeout.as_millis(),
    };
    // reqwest enforces the timeout; the extra margin only guards against a runtime that
    // cannot make progress (e.g. called from its only worker thread).
    match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(Ok((status, body))) => Ok((status.as_u16(), body)),
        Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
        Ok(Err(e)) => Err(SourceError::Connect {
            engine,
            url: url.to_owned(),
            message: wk_core::diag::error_chain(&e),
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(timed_out()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(SourceError::Connect {
            engine,
            url: url.to_owned(),
            message: "the runtime that runs requests has shut down".into(),
        }),
    }
}
