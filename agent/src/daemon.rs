//! The program's modes as library functions, so tests run them in-process (mini-redis's
//! `server::run(listener, shutdown)`): [`test`] gathers and prints, [`once`] gathers and
//! writes, [`run`] is the daemon, reloading and stopping when told. `main.rs` only parses the
//! command line and turns signals into [`Control`] messages.

use std::io::Write;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::agent;
use crate::config::{self, LoadRequest, Plan};
use crate::lineproto;
use crate::models::running_input::GatherOutcome;

pub use wk_core::control::Control;

/// Loads the config, logging its warnings, and every error on failure.
pub fn load(req: &LoadRequest<'_>) -> Option<Plan> {
    match config::load(req) {
        Ok(plan) => {
            for w in &plan.warnings {
                warn!("{w}");
            }
            Some(plan)
        }
        Err(e) => {
            for d in &e.errors {
                error!("{d}");
            }
            None
        }
    }
}

/// `--test`: gathers once (twice for rate inputs), writes line protocol to `out`, waits `wait`
/// if given. False when an input reported an error.
pub async fn test(mut plan: Plan, wait: Option<Duration>, out: &mut impl Write) -> bool {
    let results = agent::gather_once(&mut plan, true).await;
    let ok = log_errors(&results);
    for (_, outcome) in &results {
        for m in &outcome.metrics {
            let _ = out.write_all(lineproto::test_format(m).as_bytes());
        }
    }
    let _ = out.flush();
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
    ok
}

/// Logs every input's gather errors; true when there were none.
fn log_errors(results: &[(String, GatherOutcome)]) -> bool {
    let mut ok = true;
    for (name, outcome) in results {
        for e in &outcome.errors {
            error!(input = %name, "{e}");
            ok = false;
        }
    }
    ok
}

/// `--once`: gathers once, writes to every output and closes them. False when an input
/// failed or metrics could not be written (any left in a buffer after its flush).
pub async fn once(mut plan: Plan) -> bool {
    for o in plan.outputs.iter_mut() {
        agent::open_disk_buffer(o);
    }
    let results = agent::gather_once(&mut plan, true).await;
    let mut ok = log_errors(&results);
    for (_, outcome) in &results {
        for m in &outcome.metrics {
            for o in plan.outputs.iter_mut() {
                o.add(m);
            }
        }
    }
    for o in plan.outputs.iter_mut() {
        if let Err(e) = o.flush() {
            error!(output = %o.log_name(), unsent = o.buffered(), "write failed: {e}");
            ok = false;
        }
        // A flush may succeed and still leave metrics (influxdb_v2: a bucket refused with
        // 401/403 keeps its own): they were not written, so the run failed.
        let left = o.buffered();
        if left > 0 {
            match o.has_disk_buffer() {
                true => {
                    error!(output = %o.log_name(), "{left} metric(s) not written: kept in the disk buffer for the next run")
                }
                false => error!(output = %o.log_name(), "{left} metric(s) not written are lost"),
            }
            ok = false;
        }
        o.close();
    }
    ok
}

/// The daemon: runs `plan` until [`Control::Stop`] (or the sender is dropped). On
/// [`Control::Reload`] it builds a new plan with `reload` first and keeps the running one when
/// that fails, so a bad config push never stops collection.
pub async fn run(
    mut plan: Plan,
    mut reload: impl FnMut() -> Option<Plan>,
    mut control: mpsc::Receiver<Control>,
) {
    loop {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let running = tokio::spawn(agent::run(plan, async {
            let _ = stop_rx.await;
        }));
        let next = loop {
            match control.recv().await {
                Some(Control::Reload) => {
                    info!("reloading configuration");
                    match reload() {
                        Some(new) => break Some(new),
                        None => error!("new configuration is invalid; keeping the running one"),
                    }
                }
                Some(Control::Stop) | None => break None,
            }
        };
        let _ = stop_tx.send(());
        let unsent = running.await.unwrap_or_else(|e| {
            error!("agent task failed: {e}");
            agent::Unsent::default()
        });
        match next {
            Some(mut new) => {
                unsent.hand_over(&mut new.outputs, &new.stats);
                plan = new;
            }
            None => {
                unsent.log_lost();
                // What an abandoned gather left running does not outlive the agent.
                crate::common::command::kill_running();
                return;
            }
        }
    }
}
