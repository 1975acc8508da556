//! Bounded waits on real processes: the shared ones of `wk_core::testing`, and one for async tests.

#![allow(unused_imports, dead_code)]

pub use wk_core::testing::{poll_until, wait_for};

/// Polls `cond` every `pause` until it holds (true) or `within` passes (false), sleeping on
/// the tokio clock so that the runtime's other tasks go on.
pub async fn poll_until_async(
    within: std::time::Duration,
    pause: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let polled = async {
        while !cond() {
            tokio::time::sleep(pause).await;
        }
    };
    tokio::time::timeout(within, polled).await.is_ok()
}
