//! The collect/flush loop (Telegraf's `agent/agent.go`): one task per input ticking on its
//! interval (aligned to the wall clock when `round_interval`), one task per output with its
//! own buffer and flush timer. A gather that overruns its interval skips ticks, never stacks;
//! a failing input only logs; shutdown flushes every output once more.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::Plan;
use crate::metric::Metric;
use crate::models::running_input::{GatherOutcome, GlobalTags, RunningInput};
use crate::models::running_output::RunningOutput;

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Rounds `t` (ns) to the nearest multiple of `precision`, as Telegraf's `time.Round`.
pub fn round_ns(t: i64, precision: Duration) -> i64 {
    let p = precision.as_nanos() as i64;
    if p <= 1 {
        return t;
    }
    let half = p / 2;
    (t + half).div_euclid(p) * p
}

/// How long to wait from `now` (ns) for the next tick: the next multiple of `interval` (plus
/// `offset`) when aligned, else one interval.
pub fn until_next_tick(now: i64, interval: Duration, offset: Duration, aligned: bool) -> Duration {
    let i = interval.as_nanos().max(1) as i64;
    if !aligned {
        return interval;
    }
    let next = (now - offset.as_nanos() as i64).div_euclid(i) * i + i + offset.as_nanos() as i64;
    Duration::from_nanos((next - now).max(0) as u64)
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    // Cheap, good-enough randomness for spreading load: the clock's nanoseconds.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 11;
    Duration::from_nanos(x % max.as_nanos().max(1) as u64)
}

/// Gathers every input once (twice, 500 ms apart, discarding the first, for inputs whose
/// fields need a previous sample) without running outputs: `--test` and `--once`.
pub async fn gather_once(plan: &mut Plan, wait_twice: bool) -> Vec<(String, GatherOutcome)> {
    let precision = plan.agent.precision;
    let global = plan.global_tags.clone();
    let twice = wait_twice && plan.inputs.iter().any(|i| i.spec.test_twice);
    if twice {
        for ri in plan.inputs.iter_mut().filter(|i| i.spec.test_twice) {
            let _ = ri.gather(round_ns(now_ns(), precision), &global);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut out = Vec::new();
    for ri in plan.inputs.iter_mut() {
        let outcome = ri.gather(
            round_ns(now_ns(), ri.precision.unwrap_or(precision)),
            &global,
        );
        out.push((ri.log_name(), outcome));
    }
    out
}

/// Runs the plan until `stop` completes, then flushes every output one last time.
pub async fn run(plan: Plan, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Plan {
        agent,
        global_tags,
        inputs,
        outputs,
        ..
    } = plan;
    let global = Arc::new(global_tags);
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut senders = Vec::new();
    let mut output_tasks = Vec::new();
    for ro in outputs {
        let (tx, rx) = mpsc::unbounded_channel::<Arc<Vec<Metric>>>();
        senders.push(tx);
        let flush_interval = ro.flush_interval.unwrap_or(agent.flush_interval);
        let flush_jitter = ro.flush_jitter.unwrap_or(agent.flush_jitter);
        output_tasks.push(tokio::spawn(output_loop(
            ro,
            rx,
            flush_interval,
            flush_jitter,
            stop_rx.clone(),
        )));
    }
    let senders = Arc::new(senders);

    let mut input_tasks = Vec::new();
    for ri in inputs {
        let settings = InputSchedule {
            interval: ri.interval.unwrap_or(agent.interval),
            offset: ri.collection_offset.unwrap_or(agent.collection_offset),
            jitter: ri.collection_jitter.unwrap_or(agent.collection_jitter),
            precision: ri.precision.unwrap_or(agent.precision),
            aligned: agent.round_interval,
        };
        input_tasks.push(tokio::spawn(input_loop(
            ri,
            settings,
            global.clone(),
            senders.clone(),
            stop_rx.clone(),
        )));
    }
    info!(inputs = input_tasks.len(), outputs = output_tasks.len(), interval = ?agent.interval, "agent started");

    stop.await;
    let _ = stop_tx.send(true);
    for t in input_tasks {
        let _ = t.await;
    }
    // Inputs are done: dropping the last senders lets each output drain its channel and do
    // its final flush.
    drop(senders);
    for t in output_tasks {
        let _ = t.await;
    }
    info!("agent stopped");
    Ok(())
}

struct InputSchedule {
    interval: Duration,
    offset: Duration,
    jitter: Duration,
    precision: Duration,
    aligned: bool,
}

async fn input_loop(
    mut ri: RunningInput,
    s: InputSchedule,
    global: Arc<GlobalTags>,
    senders: Arc<Vec<mpsc::UnboundedSender<Arc<Vec<Metric>>>>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = ri.log_name();
    loop {
        let wait = until_next_tick(now_ns(), s.interval, s.offset, s.aligned) + jitter(s.jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let time = round_ns(now_ns(), s.precision);
        let g = global.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = ri.gather(time, &g);
            (ri, outcome)
        })
        .await;
        let outcome;
        (ri, outcome) = match joined {
            Ok(v) => v,
            Err(e) => {
                // The input panicked: it is gone, but the others keep running.
                error!(input = %name, "input crashed and is stopped: {e}");
                return;
            }
        };
        for e in &outcome.errors {
            error!(input = %name, "gather error: {e}");
        }
        debug!(input = %name, metrics = outcome.metrics.len(), elapsed = ?outcome.elapsed, "gathered");
        if !outcome.metrics.is_empty() {
            let batch = Arc::new(outcome.metrics);
            for tx in senders.iter() {
                let _ = tx.send(batch.clone());
            }
        }
        let took = started.elapsed();
        if took > s.interval {
            warn!(input = %name, took = ?took, interval = ?s.interval,
                "collection took longer than the interval; missed ticks are skipped");
        }
    }
}

async fn output_loop(
    mut ro: RunningOutput,
    mut rx: mpsc::UnboundedReceiver<Arc<Vec<Metric>>>,
    flush_interval: Duration,
    flush_jitter: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_flush = tokio::time::Instant::now() + flush_interval + jitter(flush_jitter);
    let mut last_failed = false;
    let mut stopping = false;
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => {
                    for m in batch.iter() {
                        ro.add(m);
                    }
                    // A full batch is written at once, unless writes are failing: then we wait
                    // for the timer instead of hammering the server.
                    if ro.batch_ready() && !last_failed {
                        let Some(r) = flush(ro, false).await else { return };
                        (ro, last_failed) = r;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_flush) => {
                let Some(r) = flush(ro, false).await else { return };
                (ro, last_failed) = r;
                next_flush = tokio::time::Instant::now() + flush_interval + jitter(flush_jitter);
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    }
    let Some((mut ro, failed)) = flush(ro, true).await else {
        return;
    };
    if failed && ro.buffered() > 0 {
        error!(output = %ro.log_name(), unsent = ro.buffered(), "metrics could not be written before shutdown");
    }
    ro.close();
}

/// Flushes on the blocking pool; None when the output plugin panicked (it is then gone).
/// While the output backs off after a failed write the flush is skipped, except the final one.
async fn flush(mut ro: RunningOutput, last: bool) -> Option<(RunningOutput, bool)> {
    let drops = ro.take_unreported_drops();
    if drops > 0 {
        warn!(output = %ro.log_name(), "metric buffer overflow; {drops} metrics have been dropped");
    }
    if ro.buffered() == 0 {
        return Some((ro, false));
    }
    if !last && let Some(wait) = ro.retry_in() {
        debug!(output = %ro.log_name(), buffered = ro.buffered(), retry_in = ?wait, "backing off after a failed write");
        return Some((ro, true));
    }
    let name = ro.log_name();
    let started = Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        let r = ro.flush();
        (ro, r)
    })
    .await;
    match joined {
        Ok((ro, Ok(n))) => {
            debug!(output = %ro.log_name(), written = n, elapsed = ?started.elapsed(), "wrote batch");
            Some((ro, false))
        }
        Ok((ro, Err(e))) => {
            error!(output = %ro.log_name(), buffered = ro.buffered(), "write failed, will retry: {e}");
            Some((ro, true))
        }
        Err(e) => {
            error!(output = %name, "output crashed and is stopped: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest() {
        let s = Duration::from_secs(1);
        assert_eq!(round_ns(1_499_999_999, s), 1_000_000_000);
        assert_eq!(round_ns(1_500_000_000, s), 2_000_000_000);
        assert_eq!(round_ns(123, Duration::from_nanos(1)), 123);
    }

    #[test]
    fn ticks_align_to_the_interval() {
        let i = Duration::from_secs(10);
        let now = 1_000_000_003_000_000_000; // 3 s past a multiple of 10 s
        assert_eq!(
            until_next_tick(now, i, Duration::ZERO, true),
            Duration::from_secs(7)
        );
        assert_eq!(
            until_next_tick(now, i, Duration::from_secs(5), true),
            Duration::from_secs(2)
        );
        assert_eq!(until_next_tick(now, i, Duration::ZERO, false), i);
    }
}
