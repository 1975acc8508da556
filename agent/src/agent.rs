//! The collect/flush loop (Telegraf's `agent/agent.go`): one task per input ticking on its
//! interval (aligned to the wall clock when `round_interval`), one task per output with its
//! own buffer and flush timer. A gather that overruns its interval skips ticks, never stacks;
//! a failing input only logs; shutdown flushes every output once more.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::Plan;
use crate::metric::Metric;
use crate::models::error_log::{ErrorLog, Verdict};
use crate::models::running_input::{GatherOutcome, GlobalTags, RunningInput};
use crate::models::running_output::RunningOutput;
use crate::selfstat::{PluginKey, SelfStats, WriteCounts};

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

/// The first multiple of `interval` (ns) at or after `t` (ns since the epoch): Telegraf's
/// `internal.AlignTime`.
fn align_up(t: i64, interval: i64) -> i64 {
    let i = interval.max(1);
    match t.rem_euclid(i) {
        0 => t,
        r => t.saturating_add(i - r),
    }
}

use crate::models::running_output::jitter_up_to as jitter;

/// Gathers every input once (twice, 500 ms apart, discarding the first, for inputs whose
/// fields need a previous sample) without running outputs: `--test` and `--once`.
pub async fn gather_once(plan: &mut Plan, wait_twice: bool) -> Vec<(String, GatherOutcome)> {
    let agent = plan.agent.clone();
    let global = plan.global_tags.clone();
    let twice = wait_twice && plan.inputs.iter().any(|i| i.spec.test_twice);
    if twice {
        for ri in plan.inputs.iter_mut().filter(|i| i.spec.test_twice) {
            let now = now_ns();
            let precision = agent.precision_for(ri.interval, ri.precision);
            let _ = ri.gather_at(round_ns(now, precision), now, &global);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut out = Vec::new();
    for ri in plan.inputs.iter_mut() {
        let now = now_ns();
        let outcome = ri.gather_at(
            round_ns(now, agent.precision_for(ri.interval, ri.precision)),
            now,
            &global,
        );
        out.push((ri.log_name(), outcome));
    }
    out
}

/// What the outputs of a stopped agent could not write from their memory buffers (a disk
/// buffer keeps its own): every output in config order, those with nothing left too, so
/// that an output's position among those of its plugin is its position in the config.
#[must_use = "unsent metrics are handed to the reloaded outputs or logged as lost"]
#[derive(Default)]
pub struct Unsent(Vec<(PluginKey, String, Leftover)>);

/// What one output leaves at a stop: its unsent metrics (memory buffer) and its plugin's
/// state for a reload.
#[derive(Default)]
pub struct Leftover {
    pub metrics: Vec<Metric>,
    pub state: Option<crate::outputs::HandOver>,
}

impl Unsent {
    /// Metrics left, all outputs together.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(_, _, l)| l.metrics.len()).sum()
    }

    /// True when every output wrote everything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives each output of the reloaded plan what the output of the same plugin and alias
    /// (the n-th such when there are several) left, so a reload during an outage loses
    /// nothing; what no output takes (its output was removed) is logged and counted as
    /// dropped.
    pub fn hand_over(self, outputs: &mut [RunningOutput], stats: &SelfStats) {
        let mut seen: Vec<PluginKey> = Vec::new();
        for (key, name, Leftover { metrics, state }) in self.0 {
            // The n-th old output of this plugin and alias goes to the n-th new one.
            let n = seen.iter().filter(|k| **k == key).count();
            seen.push(key.clone());
            let mut next = outputs.iter_mut().filter(|o| o.stats_key() == key).nth(n);
            if let (Some(o), Some(state)) = (next.as_deref_mut(), state) {
                o.take_over(state);
            }
            if metrics.is_empty() {
                continue;
            }
            match next {
                Some(o) => {
                    info!(output = %name, metrics = metrics.len(), "unsent metrics kept across the reload");
                    o.restore_unsent(metrics);
                }
                None => {
                    error!(output = %name, dropped = metrics.len(),
                        "output removed by the reload: its unsent metrics are dropped (counted in metrics_dropped)");
                    let dropped = WriteCounts {
                        metrics_dropped: metrics.len() as u64,
                        ..Default::default()
                    };
                    stats.record_write(&key, dropped, 0, None);
                }
            }
        }
    }

    /// At exit: says what is lost.
    pub fn log_lost(self) {
        for (_, name, Leftover { metrics, .. }) in
            self.0.into_iter().filter(|(_, _, l)| !l.metrics.is_empty())
        {
            error!(output = %name, dropped = metrics.len(),
                "metrics could not be written before shutdown; lost (buffer_strategy = \"disk\" keeps them)");
        }
    }
}

/// Runs the plan until `stop` completes, then flushes every output one last time and
/// returns what the memory buffers still hold.
pub async fn run(plan: Plan, stop: impl Future<Output = ()>) -> Unsent {
    let Plan {
        agent,
        global_tags,
        inputs,
        outputs,
        stats,
        ..
    } = plan;
    let global = Arc::new(global_tags);
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut senders = Vec::new();
    let mut output_tasks = Vec::new();
    for mut ro in outputs {
        open_disk_buffer(&mut ro);
        let (tx, rx) = mpsc::unbounded_channel::<Arc<Vec<Metric>>>();
        senders.push(tx);
        let flush_interval = ro.flush_interval.unwrap_or(agent.flush_interval);
        let flush_jitter = ro.flush_jitter.unwrap_or(agent.flush_jitter);
        stats.register_output(&ro.stats_key(), ro.buffer_limit);
        let reporter = Reporter {
            stats: stats.clone(),
            key: ro.stats_key(),
            // From zero: drops counted before the start (a reload's hand-over beyond the
            // limit, the memory buffer moved to a full disk buffer) are reported too.
            last: WriteCounts::default(),
        };
        let meta = (ro.stats_key(), ro.log_name());
        output_tasks.push((
            meta,
            tokio::spawn(output_loop(
                ro,
                rx,
                Flushing {
                    interval: flush_interval,
                    jitter: flush_jitter,
                    linger: linger(agent.interval, flush_interval),
                },
                stop_rx.clone(),
                reporter,
            )),
        ));
    }
    let senders = Arc::new(senders);

    let mut input_tasks = Vec::new();
    for ri in inputs {
        let settings = InputSchedule {
            interval: ri.interval.unwrap_or(agent.interval),
            offset: ri.collection_offset.unwrap_or(agent.collection_offset),
            jitter: ri.collection_jitter.unwrap_or(agent.collection_jitter),
            precision: agent.precision_for(ri.interval, ri.precision),
            aligned: agent.round_interval,
        };
        stats.register_input(&ri.stats_key());
        input_tasks.push(tokio::spawn(input_loop(
            ri,
            settings,
            global.clone(),
            senders.clone(),
            stop_rx.clone(),
            stats.clone(),
        )));
    }
    info!(inputs = input_tasks.len(), outputs = output_tasks.len(), interval = ?agent.interval, "agent started");
    // What the gathers freed goes back to the system (crate::memory).
    let releaser = tokio::spawn(async {
        let mut tick = tokio::time::interval(crate::memory::RELEASE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            crate::memory::release_free_memory();
        }
    });

    stop.await;
    releaser.abort();
    let _ = stop_tx.send(true);
    for t in input_tasks {
        let _ = t.await;
    }
    // Inputs are done: dropping the last senders lets each output drain its channel and do
    // its final flush.
    drop(senders);
    let mut unsent = Unsent::default();
    for ((key, name), t) in output_tasks {
        // An output that crashed left nothing to hand over, but keeps its place.
        let left = t.await.ok().flatten().unwrap_or_default();
        unsent.0.push((key, name, left));
    }
    info!("agent stopped");
    unsent
}

struct InputSchedule {
    interval: Duration,
    offset: Duration,
    jitter: Duration,
    precision: Duration,
    aligned: bool,
}

impl InputSchedule {
    fn interval_ns(&self) -> i64 {
        i64::try_from(self.interval.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// The clock reading (ns) of the first tick for an input started at `start`, as Telegraf
    /// 1.39's `internal/clock` ticker: aligned, the first multiple of the interval at least a
    /// hundredth of an interval after `start`, then shifted by `collection_offset` (a start at
    /// :03 with a 10 s interval and a 5 s offset first ticks at :15, not :05); unaligned,
    /// `start` plus the offset (at once when there is none).
    fn first_tick(&self, start: i64) -> i64 {
        let i = self.interval_ns();
        let offset = i64::try_from(self.offset.as_nanos()).unwrap_or(i64::MAX);
        let base = if self.aligned {
            align_up(start.saturating_add(i / 100), i)
        } else {
            start
        };
        base.saturating_add(offset)
    }

    /// Where the schedule goes after the gather for `tick`, which started at the clock reading
    /// `started` and ended at `now`. Ticks count on from the last one fired, never from `now`
    /// alone, as Telegraf's ticker adds the interval to its schedule: a sleep (monotonic) that
    /// ends a little before the wall clock reaches its tick cannot fire one tick twice. If
    /// ticks passed during the gather, the latest of them is next (it starts at once, the
    /// earlier ones are skipped, never stacked).
    ///
    /// Aligned ticks follow the wall clock, which can be stepped:
    /// - back by less than an interval: the next tick is still the one after the last fired;
    /// - back by an interval or more (chrony's makestep at boot, a VM resumed): the schedule
    ///   starts again from the grid after `now`, as at start. Counting on from the last tick
    ///   would wait for the clock to catch up (a step back of 1 h stopped the host reporting
    ///   for 1 h, and every alert on it went NoData);
    /// - forward during the wait: the gather served the latest tick at or before `started`,
    ///   not the one it waited for, so one gather covers the jump and the next waits on the
    ///   grid (counting from the tick waited for made the latest passed tick fire at once,
    ///   a second gather a few ms after the first, its rates over almost nothing).
    fn next_tick(&self, tick: i64, started: i64, now: i64) -> Next {
        let i = i128::from(self.interval_ns());
        let (tick, started, now) = (i128::from(tick), i128::from(started), i128::from(now));
        let served = tick + ((started - tick) / i).max(0) * i;
        // Unaligned ticks are read on the monotonic clock, which is never stepped.
        if self.aligned && now <= served - i {
            return Next::Realigned(self.first_tick(i64::try_from(now).unwrap_or(i64::MAX)));
        }
        let passed = ((now - served) / i).max(1);
        Next::OnSchedule(i64::try_from(served + passed * i).unwrap_or(i64::MAX))
    }
}

/// The clock reading (ns) of an input's next tick.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// On the schedule of the last tick (one that already passed starts at once).
    OnSchedule(i64),
    /// The wall clock was stepped back an interval or more: the first tick of a new schedule.
    Realigned(i64),
}

async fn input_loop(
    ri: RunningInput,
    s: InputSchedule,
    global: Arc<GlobalTags>,
    senders: Arc<Vec<mpsc::UnboundedSender<Arc<Vec<Metric>>>>>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<SelfStats>,
) {
    let name = ri.log_name();
    let key = ri.stats_key();
    let worker = match GatherWorker::spawn(ri, global, &name) {
        Ok(w) => w,
        Err(e) => {
            error!(input = %name, "cannot start the gather thread, input stopped: {e}");
            return;
        }
    };
    let mut errors = ErrorLog::default();
    let mut stopping = false;
    // Aligned ticks are multiples of the interval on the wall clock; unaligned ones count on
    // the monotonic clock from the input's start, as Telegraf's (its unaligned schedule keeps
    // Go's monotonic reading, its aligned one is truncated, which drops it). So a wall-clock
    // step moves aligned ticks only.
    let origin = tokio::time::Instant::now();
    let read = || {
        if s.aligned {
            now_ns()
        } else {
            i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX)
        }
    };
    let mut tick = s.first_tick(read());
    let mut first = true;
    loop {
        if stopping {
            return;
        }
        // A tick that passed while the last gather ran starts the next at once instead of
        // waiting for the tick after (a ping at its defaults against a down host reported
        // every other interval); a tick waited for gets its jitter, as does the first.
        let until = tick.saturating_sub(read());
        let wait = if until > 0 || first {
            Duration::from_nanos(until.max(0) as u64) + jitter(s.jitter)
        } else {
            Duration::ZERO
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let fired_at = read();
        let clock = now_ns();
        let time = round_ns(clock, s.precision);
        let gathered = worker.gather(time, clock);
        tokio::pin!(gathered);
        let outcome = tokio::select! {
            o = &mut gathered => o,
            _ = stop.changed() => {
                // A stop or reload during a gather: it gets a moment to finish; one that
                // hangs (a dead NFS mount, a stuck helper program) does not hold up the
                // stop or the reload. Its thread is left to end on its own.
                stopping = true;
                match tokio::time::timeout(STOP_GRACE, &mut gathered).await {
                    Ok(o) => o,
                    Err(_) => {
                        warn!(input = %name, grace = ?STOP_GRACE,
                            "gather still running at stop; abandoned (its metrics are lost)");
                        return;
                    }
                }
            }
        };
        let outcome = match outcome {
            Some(o) => o,
            None => {
                // The input panicked: it is gone, but the others keep running.
                error!(input = %name, "input crashed and is stopped");
                return;
            }
        };
        for e in &outcome.errors {
            match errors.check(e, Instant::now()) {
                Verdict::First => error!(input = %name, "gather error: {e}"),
                Verdict::Repeated(n) => error!(input = %name,
                    "gather error: {e} (and {n} more times since last logged)"),
                Verdict::Unsupported => debug!(input = %name, "not available on this host: {e}"),
                Verdict::Quiet => {}
            }
        }
        debug!(input = %name, metrics = outcome.metrics.len(), elapsed = ?outcome.elapsed, "gathered");
        stats.record_gather(
            &key,
            outcome.metrics.len(),
            outcome.errors.len(),
            outcome.elapsed,
        );
        if !outcome.metrics.is_empty() {
            let batch = Arc::new(outcome.metrics);
            for tx in senders.iter() {
                let _ = tx.send(batch.clone());
            }
        }
        let took = started.elapsed();
        let now = read();
        tick = match s.next_tick(tick, fired_at, now) {
            Next::OnSchedule(next) => next,
            Next::Realigned(next) => {
                let behind = Duration::from_nanos(tick.saturating_sub(now).max(0) as u64);
                // One step is seen by every aligned input: one warning, the rest at debug.
                if first_to_see_step(now) {
                    warn!(input = %name, behind = ?behind,
                        "the wall clock was stepped back; collections realigned to it (the timestamps since its new time are collected again; every input does the same)");
                } else {
                    debug!(input = %name, behind = ?behind, "wall clock stepped back; realigned");
                }
                next
            }
        };
        if took > s.interval {
            warn!(input = %name, took = ?took, interval = ?s.interval,
                "collection took longer than the interval; the next starts at once, further missed ticks are skipped");
        }
    }
}

/// Whether this input is the first to see a wall-clock step back at `now` (ns): no input has
/// reported one in the minute before. Each aligned input realigns on its own; one step is
/// logged once, not once per input.
fn first_to_see_step(now: i64) -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    const QUIET_NS: i64 = 60_000_000_000;
    let last = LAST.swap(now, Ordering::Relaxed);
    // After a step back, `now` is below the times of earlier reports: far from it either way
    // is a new step.
    last == i64::MIN || now.abs_diff(last) > QUIET_NS as u64
}

/// How long a stop or reload waits for a gather under way.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One gather request: the frozen times, and where the outcome goes.
struct GatherJob {
    time: i64,
    clock: i64,
    reply: oneshot::Sender<GatherOutcome>,
}

/// A long-lived thread that owns one input and gathers it on request.
///
/// Why not `spawn_blocking` per tick: the blocking pool hands each gather to whichever idle
/// thread comes first, so over time every pool thread runs every input, and each thread's
/// malloc arena and cache ratchet up towards the largest working set of any input and
/// fragment on the mix. The live heap stays flat (massif: ~218 KB) while RSS crept up for tens
/// of minutes (4.95 → 6.77 MB over 27 min); the pool threads were not churning (same thread
/// ids throughout, a longer keep-alive changed nothing). With one thread per input, each
/// thread only ever sees one input's allocation pattern and RSS levels off much sooner (see
/// docs/performance-agent.md). Concurrency between inputs is unchanged (one thread each, as
/// the pool had), and a gather still never overlaps its own next tick because the loop awaits
/// the reply.
struct GatherWorker {
    jobs: std::sync::mpsc::Sender<GatherJob>,
}

impl GatherWorker {
    fn spawn(mut ri: RunningInput, global: Arc<GlobalTags>, name: &str) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<GatherJob>();
        // Thread names are cut at 15 bytes by the kernel: "in:cpu", "in:netstat".
        let short = name.strip_prefix("inputs.").unwrap_or(name);
        let thread_name: String = format!("in:{short}").chars().take(15).collect();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                // Ends when the input loop drops its sender (shutdown or crash elsewhere);
                // a panic in the input ends it too, dropping the reply so the loop sees it.
                while let Ok(job) = rx.recv() {
                    let outcome = ri.gather_at(job.time, job.clock, &global);
                    let _ = job.reply.send(outcome);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Gathers once; None when the input panicked (its thread is then gone).
    async fn gather(&self, time: i64, clock: i64) -> Option<GatherOutcome> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(GatherJob { time, clock, reply }).ok()?;
        rx.await.ok()
    }
}

/// Metrics that arrived while the output's worker was busy (writing, or fsyncing the disk
/// buffer): bounded like the output's buffer, oldest batches dropped and counted, so a slow
/// write never lets memory grow past the limit (Telegraf's flushLoop keeps adding to the
/// bounded buffer during a write).
#[derive(Debug, Default)]
struct Pending {
    batches: VecDeque<Arc<Vec<Metric>>>,
    metrics: usize,
    dropped: usize,
}

impl Pending {
    fn push(&mut self, batch: Arc<Vec<Metric>>, limit: usize) {
        self.metrics += batch.len();
        self.batches.push_back(batch);
        while self.metrics > limit.max(1) && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.metrics -= old.len();
                self.dropped += old.len();
            }
        }
    }

    fn take(&mut self) -> (Vec<Arc<Vec<Metric>>>, usize) {
        self.metrics = 0;
        (
            self.batches.drain(..).collect(),
            std::mem::take(&mut self.dropped),
        )
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.dropped == 0
    }
}

/// When a job should write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushKind {
    /// Only when a full batch waits (and writes are not failing).
    IfReady,
    /// The flush timer: write unless backing off after a failure.
    Timer,
    /// Shutdown: write whatever waits, then close the output.
    Last,
}

/// One request to an output's worker: metrics to buffer, drops counted outside it, and
/// whether to write.
struct OutputJob {
    batches: Vec<Arc<Vec<Metric>>>,
    dropped: usize,
    flush: FlushKind,
    reply: oneshot::Sender<OutputReport>,
}

/// What the worker reports after a job: counters for the self-statistics.
struct OutputReport {
    stats: WriteCounts,
    buffered: usize,
    write_time: Option<Duration>,
    /// After the last job: what the memory buffer could not write, and the plugin's state.
    unsent: Leftover,
}

/// A long-lived thread that owns one output: its buffer (memory or disk, with its fsyncs)
/// and its writes, so neither blocks the runtime that paces the inputs, and each output's
/// allocations stay on one thread (see [`GatherWorker`] for why not the blocking pool).
struct OutputWorker {
    jobs: std::sync::mpsc::Sender<OutputJob>,
}

impl OutputWorker {
    fn spawn(mut ro: RunningOutput) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<OutputJob>();
        let name = ro.log_name();
        let short = name.strip_prefix("outputs.").unwrap_or(&name);
        let thread_name: String = format!("out:{short}").chars().take(15).collect();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut last_failed = false;
                for job in rx {
                    ro.record_drops(job.dropped);
                    for b in &job.batches {
                        ro.add_all(b);
                    }
                    let drops = ro.take_unreported_drops();
                    if drops > 0 {
                        warn!(output = %ro.log_name(), "metric buffer overflow; {drops} metrics have been dropped");
                    }
                    let write = match job.flush {
                        FlushKind::IfReady => ro.batch_ready() && !last_failed,
                        FlushKind::Timer | FlushKind::Last => true,
                    };
                    let mut write_time = None;
                    if write {
                        let started = Instant::now();
                        if let Some(failed) = flush(&mut ro, job.flush == FlushKind::Last) {
                            last_failed = failed;
                            write_time = Some(started.elapsed());
                        }
                    }
                    let mut unsent = Leftover::default();
                    let mut buffered = ro.buffered();
                    if job.flush == FlushKind::Last {
                        // The caller decides: handed to the reloaded output, or lost at exit.
                        unsent = Leftover {
                            metrics: ro.take_unsent(),
                            state: ro.hand_over(),
                        };
                        buffered = ro.buffered();
                        if last_failed && buffered > 0 {
                            warn!(output = %ro.log_name(), unsent = buffered,
                                "metrics could not be written before shutdown or reload; kept in the disk buffer");
                        }
                        ro.close();
                    }
                    let _ = job.reply.send(OutputReport {
                        stats: ro.stats,
                        buffered,
                        write_time,
                        unsent,
                    });
                }
            })?;
        Ok(Self { jobs })
    }

    /// Sends a job; the receiver yields the report, or an error when the output panicked.
    fn submit(
        &self,
        batches: Vec<Arc<Vec<Metric>>>,
        dropped: usize,
        flush: FlushKind,
    ) -> oneshot::Receiver<OutputReport> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(OutputJob {
            batches,
            dropped,
            flush,
            reply,
        });
        rx
    }
}

/// When an output writes: at most `interval` (+ up to `jitter`) apart, and `linger` (+ up to
/// `jitter`) after the first metrics of a collection arrive, so that each collection is
/// written as soon as it is gathered (the inputs of one tick finish within a few ms of each
/// other) rather than up to a whole `flush_interval` later: an alert rule then sees the
/// points of a tick on that tick. `flush_jitter` spreads the writes of many hosts, as in
/// Telegraf.
#[derive(Debug, Clone, Copy)]
struct Flushing {
    interval: Duration,
    jitter: Duration,
    linger: Duration,
}

/// A twentieth of the collection interval, within [50 ms, 500 ms], and never more than
/// `flush_interval`.
fn linger(collection: Duration, flush_interval: Duration) -> Duration {
    (collection / 20)
        .clamp(Duration::from_millis(50), Duration::from_millis(500))
        .min(flush_interval)
}

async fn output_loop(
    ro: RunningOutput,
    mut rx: mpsc::UnboundedReceiver<Arc<Vec<Metric>>>,
    timing: Flushing,
    mut stop: watch::Receiver<bool>,
    mut reporter: Reporter,
) -> Option<Leftover> {
    let name = ro.log_name();
    let limit = ro.buffer_limit;
    let worker = match OutputWorker::spawn(ro) {
        Ok(w) => w,
        Err(e) => {
            error!(output = %name, "cannot start the output thread, output stopped: {e}");
            return None;
        }
    };
    let Flushing {
        interval: flush_interval,
        jitter: flush_jitter,
        linger,
    } = timing;
    let mut next_flush = tokio::time::Instant::now() + flush_interval + jitter(flush_jitter);
    // Set when a collection's first metrics arrive: write them shortly after.
    let mut early: Option<tokio::time::Instant> = None;
    let mut pending = Pending::default();
    let mut in_flight: Option<oneshot::Receiver<OutputReport>> = None;
    let mut flush_due = false;
    let mut closed = false;
    let mut stopping = false;
    loop {
        tokio::select! {
            batch = rx.recv(), if !closed => match batch {
                Some(batch) => {
                    pending.push(batch, limit);
                    early.get_or_insert_with(|| {
                        tokio::time::Instant::now() + linger + jitter(flush_jitter)
                    });
                }
                None => closed = true,
            },
            report = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                match report {
                    Ok(r) => reporter.report(&r),
                    Err(_) => {
                        error!(output = %name, "output crashed and is stopped");
                        return None;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_flush) => {
                flush_due = true;
                next_flush = tokio::time::Instant::now() + flush_interval + jitter(flush_jitter);
            }
            _ = async { tokio::time::sleep_until(early.expect("guarded")).await }, if early.is_some() => {
                flush_due = true;
                early = None;
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
        if in_flight.is_some() {
            continue;
        }
        if closed {
            // Inputs are done: one last job with what is left, then stop.
            let (batches, dropped) = pending.take();
            return match worker.submit(batches, dropped, FlushKind::Last).await {
                Ok(mut r) => {
                    reporter.report(&r);
                    Some(std::mem::take(&mut r.unsent))
                }
                Err(_) => {
                    error!(output = %name, "output crashed and is stopped");
                    None
                }
            };
        }
        if !pending.is_empty() || flush_due {
            let (batches, dropped) = pending.take();
            let kind = if flush_due {
                FlushKind::Timer
            } else {
                FlushKind::IfReady
            };
            flush_due = false;
            in_flight = Some(worker.submit(batches, dropped, kind));
        }
    }
}

/// Writes what is buffered, on the output's own thread; `None` when nothing was tried
/// (empty, or backing off after a failure — except at shutdown), else whether it failed.
fn flush(ro: &mut RunningOutput, last: bool) -> Option<bool> {
    if ro.buffered() == 0 {
        return None;
    }
    if !last && let Some(wait) = ro.retry_in() {
        debug!(output = %ro.log_name(), buffered = ro.buffered(), retry_in = ?wait, "backing off after a failed write");
        return None;
    }
    let started = Instant::now();
    match ro.flush() {
        Ok(n) => {
            debug!(output = %ro.log_name(), written = n, elapsed = ?started.elapsed(), "wrote batch");
            Some(false)
        }
        Err(e) => {
            error!(output = %ro.log_name(), buffered = ro.buffered(), "write failed, will retry: {e}");
            Some(true)
        }
    }
}

/// Opens an output's disk buffer when the config asks for one; on failure the output runs on
/// its memory buffer, loudly (losing metrics on restart beats losing all of them now).
pub fn open_disk_buffer(ro: &mut RunningOutput) {
    match ro.open_disk_buffer() {
        Ok(Some(rec)) => {
            info!(output = %ro.log_name(), restored = rec.restored, "disk buffer opened");
            if rec.truncated_bytes > 0 {
                warn!(output = %ro.log_name(), bytes = rec.truncated_bytes,
                    "disk buffer: cut a torn or corrupt tail left by a crash");
            }
        }
        Ok(None) => {}
        Err(e) => error!(output = %ro.log_name(),
            "cannot open the disk buffer, using memory (metrics will not survive a restart): {e}"),
    }
}

/// Publishes an output's counters to the registry as deltas, so that counts keep growing
/// across reloads (a reload builds a new output whose own counters start at zero).
struct Reporter {
    stats: Arc<SelfStats>,
    key: crate::selfstat::PluginKey,
    last: WriteCounts,
}

impl Reporter {
    fn report(&mut self, r: &OutputReport) {
        self.stats.record_write(
            &self.key,
            r.stats.since(self.last),
            r.buffered,
            r.write_time,
        );
        self.last = r.stats;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an output leaves goes to the output at its position among those of its plugin
    /// and alias, counting the ones that left nothing (it went to the first such output
    /// that had not taken anything: another database).
    #[test]
    fn unsent_metrics_go_to_the_output_at_the_same_position() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("a.conf");
        std::fs::write(
            &conf,
            "[[inputs.mem]]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n",
        )
        .unwrap();
        let mut plan = crate::config::load(&crate::config::LoadRequest::new(vec![conf])).unwrap();
        let key = plan.outputs[0].stats_key();
        let unsent = Unsent(vec![
            (key.clone(), "outputs.file".into(), Leftover::default()),
            (
                key.clone(),
                "outputs.file".into(),
                Leftover {
                    metrics: vec![Metric::new("m", 1)],
                    state: None,
                },
            ),
        ]);
        unsent.hand_over(&mut plan.outputs, &plan.stats);
        assert_eq!(plan.outputs[0].buffered(), 0, "the first had nothing left");
        assert_eq!(plan.outputs[1].buffered(), 1, "the second's, to the second");
        // Removed by the reload (one output of the plugin left): dropped and counted.
        plan.outputs.truncate(1);
        let unsent = Unsent(vec![
            (key.clone(), "outputs.file".into(), Leftover::default()),
            (
                key.clone(),
                "outputs.file".into(),
                Leftover {
                    metrics: vec![Metric::new("m", 2)],
                    state: None,
                },
            ),
        ]);
        unsent.hand_over(&mut plan.outputs, &plan.stats);
        assert_eq!(plan.outputs[0].buffered(), 0);
        let (_, outputs) = plan.stats.read();
        let (_, st) = outputs.iter().find(|(k, _)| *k == key).unwrap();
        assert_eq!(st.counts.metrics_dropped, 1);
    }

    /// A reload hands each output's plugin state (influxdb_v2: its refused buckets) to the
    /// output at the same position, with or without unsent metrics (a disk buffer's stay on
    /// disk).
    #[test]
    fn plugin_state_goes_to_the_output_at_the_same_position() {
        use crate::outputs::influxdb_v2::RefusedBuckets;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("a.conf");
        std::fs::write(
            &conf,
            "[[inputs.mem]]\n[[outputs.influxdb_v2]]\n  bucket_tag = \"b\"\n",
        )
        .unwrap();
        let mut plan = crate::config::load(&crate::config::LoadRequest::new(vec![conf])).unwrap();
        let key = plan.outputs[0].stats_key();
        let refused = RefusedBuckets([("secret".to_owned(), 3)].into());
        let unsent = Unsent(vec![(
            key,
            "outputs.influxdb_v2".into(),
            Leftover {
                metrics: Vec::new(),
                state: Some(Box::new(refused)),
            },
        )]);
        unsent.hand_over(&mut plan.outputs, &plan.stats);
        let state = plan.outputs[0]
            .hand_over()
            .and_then(|s| s.downcast::<RefusedBuckets>().ok());
        assert_eq!(state.and_then(|s| s.0.get("secret").copied()), Some(3));
    }

    #[test]
    fn pending_keeps_at_most_the_limit_and_counts_what_it_drops() {
        let mut p = Pending::default();
        for i in 0..25 {
            p.push(Arc::new(vec![Metric::new("m", i)]), 10);
        }
        assert_eq!(p.metrics, 10);
        let (batches, dropped) = p.take();
        assert_eq!((batches.len(), dropped), (10, 15));
        assert_eq!(batches[0][0].time, 15, "the newest are kept");
        assert!(p.is_empty());
    }

    /// An output whose writes take `delay`; counts what it stored.
    struct Slow {
        delay: Duration,
        written: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl crate::outputs::Output for Slow {
        fn write(&mut self, metrics: &[Metric]) -> Result<(), crate::outputs::WriteError> {
            std::thread::sleep(self.delay);
            self.written
                .fetch_add(metrics.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    /// A running [`Slow`] output holding at most `buffer_limit` metrics, registered with
    /// fresh self-statistics; its reporter, write count and statistics.
    fn slow_output(
        delay: Duration,
        buffer_limit: usize,
    ) -> (
        RunningOutput,
        Reporter,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<SelfStats>,
    ) {
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let spec = crate::outputs::find("file").expect("file output");
        let output = Box::new(Slow {
            delay,
            written: written.clone(),
        });
        let mut ro = RunningOutput::new(spec, output);
        ro.buffer_limit = buffer_limit;
        let stats = Arc::new(SelfStats::default());
        stats.register_output(&ro.stats_key(), buffer_limit);
        let reporter = Reporter {
            stats: stats.clone(),
            key: ro.stats_key(),
            // From zero: drops counted before the start (a reload's hand-over beyond the
            // limit, the memory buffer moved to a full disk buffer) are reported too.
            last: WriteCounts::default(),
        };
        (ro, reporter, written, stats)
    }

    /// Regression: while a write was in flight the loop stopped receiving, so everything the
    /// inputs sent piled up in the unbounded channel, past `metric_buffer_limit` and uncounted.
    #[tokio::test]
    async fn a_slow_write_does_not_let_the_queue_grow_past_the_buffer_limit() {
        let (ro, reporter, written, stats) = slow_output(Duration::from_millis(600), 10);
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let timing = Flushing {
            interval: Duration::from_millis(50),
            jitter: Duration::ZERO,
            linger: Duration::from_millis(50),
        };
        let task = tokio::spawn(output_loop(ro, rx, timing, stop_rx, reporter));
        // Start a write, then send 100 batches while it is in flight.
        tx.send(Arc::new(vec![Metric::new("m", 0).with_field("v", 1i64)]))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut sent = Vec::new();
        for i in 1..=100 {
            let b = Arc::new(vec![Metric::new("m", i).with_field("v", 1i64)]);
            sent.push(Arc::downgrade(&b));
            tx.send(b).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let alive = sent.iter().filter(|w| w.upgrade().is_some()).count();
        assert!(
            alive <= 10,
            "{alive} batches held during one write (limit 10)"
        );
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop ends")
            .unwrap();
        let w = written.load(std::sync::atomic::Ordering::SeqCst);
        let (_, outputs) = stats.read();
        let dropped: u64 = outputs.iter().map(|(_, o)| o.counts.metrics_dropped).sum();
        assert_eq!(
            w as u64 + dropped,
            101,
            "every metric written or counted as dropped"
        );
    }

    /// A collection is written `linger` after it arrives, not up to `flush_interval` later:
    /// alert rules see a tick's points on that tick.
    #[tokio::test]
    async fn a_collection_is_written_as_soon_as_it_is_gathered() {
        let (ro, reporter, written, _) = slow_output(Duration::ZERO, 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let timing = Flushing {
            interval: Duration::from_secs(60),
            jitter: Duration::ZERO,
            linger: linger(Duration::from_secs(1), Duration::from_secs(60)),
        };
        assert_eq!(timing.linger, Duration::from_millis(50));
        let task = tokio::spawn(output_loop(ro, rx, timing, stop_rx, reporter));
        let count = || written.load(std::sync::atomic::Ordering::SeqCst);
        for round in 1..=2 {
            // Two inputs of one tick, a few ms apart: one write for both.
            tx.send(Arc::new(vec![
                Metric::new("a", round).with_field("v", 1i64),
            ]))
            .unwrap();
            tx.send(Arc::new(vec![
                Metric::new("b", round).with_field("v", 1i64),
            ]))
            .unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(count(), 2 * round as usize, "round {round} written");
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(
            linger(Duration::from_secs(10), Duration::from_secs(10)),
            Duration::from_millis(500)
        );
        assert_eq!(
            linger(Duration::from_secs(10), Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn rounding_is_to_nearest() {
        let s = Duration::from_secs(1);
        assert_eq!(round_ns(1_499_999_999, s), 1_000_000_000);
        assert_eq!(round_ns(1_500_000_000, s), 2_000_000_000);
        assert_eq!(round_ns(123, Duration::from_nanos(1)), 123);
    }

    const S: i64 = 1_000_000_000;

    fn schedule(aligned: bool, offset_ms: u64) -> InputSchedule {
        InputSchedule {
            interval: Duration::from_secs(10),
            offset: Duration::from_millis(offset_ms),
            jitter: Duration::ZERO,
            precision: Duration::from_secs(1),
            aligned,
        }
    }

    /// Regression: an aligned first tick was the next boundary of the offset grid (a start at
    /// :03 with a 5 s offset gathered at :05); Telegraf 1.39 aligns the start first (to the
    /// boundary at least a hundredth of an interval ahead), then adds the offset (:15).
    #[test]
    fn aligned_ticks_align_the_start_then_add_the_offset() {
        let boundary = 100_000_000 * S; // a multiple of 10 s
        let s = schedule(true, 0);
        assert_eq!(s.first_tick(boundary + 3 * S), boundary + 10 * S);
        assert_eq!(s.first_tick(boundary), boundary + 10 * S);
        // Within a hundredth of an interval of a boundary: the one after.
        assert_eq!(s.first_tick(boundary + 9_950_000_000), boundary + 20 * S);
        let s = schedule(true, 5_000);
        assert_eq!(s.first_tick(boundary + 3 * S), boundary + 15 * S);
        assert_eq!(
            s.next_tick(
                boundary + 15 * S,
                boundary + 15 * S,
                boundary + 15_200_000_000
            ),
            Next::OnSchedule(boundary + 25 * S)
        );
    }

    /// Telegraf 1.39's ticker (`internal/clock`, which replaced the `UnalignedTicker` that
    /// fired at start + interval + offset) fires at start + offset, then every interval from
    /// there, whatever the gathers take.
    #[test]
    fn unaligned_ticks_start_at_the_offset_and_keep_their_phase() {
        let start = 7 * S;
        let s = schedule(false, 3_000);
        let first = s.first_tick(start);
        assert_eq!(first, start + 3 * S);
        // The first gather took 2.5 s: the next tick is 10 s after the first.
        let after = |took: i64| s.next_tick(first, first, first + took);
        assert_eq!(after(2_500_000_000), Next::OnSchedule(first + 10 * S));
        // One took 12 s: the tick it missed starts the next at once, from the same phase.
        assert_eq!(after(12 * S), Next::OnSchedule(first + 10 * S));
        // One took 25 s: the latest missed tick only, never a stack of them.
        assert_eq!(after(25 * S), Next::OnSchedule(first + 20 * S));
        // No offset: the first gather at once.
        assert_eq!(schedule(false, 0).first_tick(start), start);
    }

    /// Regression: the next tick was the first one after the wall clock read after a gather,
    /// so a monotonic sleep ending a little before the wall clock reached its tick (or a clock
    /// stepped back a little) fired the same tick again, repeating its timestamps.
    #[test]
    fn a_clock_behind_the_last_tick_by_less_than_an_interval_never_fires_it_twice() {
        let s = schedule(true, 0);
        let tick = 100_000_000 * S;
        // The sleep ended 1 ms early by the wall clock; the gather took 0.5 ms.
        let next = s.next_tick(tick, tick - 1_000_000, tick - 500_000);
        assert_eq!(next, Next::OnSchedule(tick + 10 * S));
        // Stepped back 5 s during the wait, or during the gather: not `tick` again.
        let next = s.next_tick(tick, tick - 5 * S, tick - 5 * S + 1_000_000);
        assert_eq!(next, Next::OnSchedule(tick + 10 * S));
        let next = s.next_tick(tick, tick, tick - 5 * S);
        assert_eq!(next, Next::OnSchedule(tick + 10 * S));
        // Just under an interval behind.
        let next = s.next_tick(tick, tick, tick - 10 * S + 1);
        assert_eq!(next, Next::OnSchedule(tick + 10 * S));
    }

    /// Regression: ticks counted on from the last one fired whatever the clock read, so a wall
    /// clock stepped back 1 h (chrony's makestep at boot, a VM resumed) made the next gather
    /// wait 1 h and an interval: the host stopped reporting and its alerts went NoData.
    #[test]
    fn a_clock_stepped_back_an_interval_or_more_realigns_to_the_grid() {
        let tick = 100_000_000 * S; // a multiple of 10 s
        let s = schedule(true, 0);
        // Stepped back 1 h less 3 s during the wait: the boundary after the new time, as at
        // start (aligned at least a hundredth of an interval ahead).
        let back = tick - 3597 * S;
        let next = s.next_tick(tick, back, back + 2_000_000);
        assert_eq!(next, Next::Realigned(tick - 3590 * S));
        // Stepped back during the gather, 9.95 s before a boundary: the one after it.
        let next = s.next_tick(tick, tick, tick - 3600 * S - 50_000_000);
        assert_eq!(next, Next::Realigned(tick - 3590 * S));
        // Exactly an interval behind: realigned.
        let next = s.next_tick(tick, tick, tick - 10 * S);
        assert_eq!(next, Next::Realigned(tick));
        // With an offset, the grid of the offset again (aligned, then shifted).
        let s = schedule(true, 5_000);
        let next = s.next_tick(tick + 5 * S, tick + 5 * S, tick - 3597 * S);
        assert_eq!(next, Next::Realigned(tick - 3585 * S));
        // The monotonic clock of unaligned ticks is never stepped: no realignment.
        let s = schedule(false, 0);
        let next = s.next_tick(tick, tick, tick - 3600 * S);
        assert_eq!(next, Next::OnSchedule(tick + 10 * S));
    }

    /// One step back is seen by every aligned input: the first warns, the others within a
    /// minute of it do not; a later step, or another one back, warns again.
    #[test]
    fn a_clock_step_is_warned_once_not_once_per_input() {
        let s = 1_000_000_000i64;
        let t = 1_800_000_000 * s;
        assert!(super::first_to_see_step(t));
        assert!(!super::first_to_see_step(t + 10 * s), "the next input");
        assert!(!super::first_to_see_step(t + 50 * s));
        assert!(super::first_to_see_step(t + 200 * s), "a later step");
        assert!(super::first_to_see_step(t - 3600 * s), "stepped back again");
    }

    /// A wall clock stepped 3 h forward fires one gather, not the 1080 ticks it skipped, nor a
    /// second one at once after the first (its rates would span a few ms); the next is on the
    /// grid an interval later.
    #[test]
    fn a_clock_stepped_forward_fires_once_then_continues_on_the_grid() {
        let s = schedule(true, 0);
        let tick = 100_000_000 * S;
        let ahead = tick + 3 * 3600 * S;
        // During the wait: the gather that woke at `tick` read `ahead + 2 s`; it served the
        // tick at `ahead`, so the next is the one after, still to come.
        let next = s.next_tick(tick, ahead + 2 * S, ahead + 2_300_000_000);
        assert_eq!(next, Next::OnSchedule(ahead + 10 * S));
        // During the gather: the latest tick passed starts at once (ahead + 0 ≤ now)...
        let next = s.next_tick(tick, tick, ahead + 500_000_000);
        assert_eq!(next, Next::OnSchedule(ahead));
        // ...and after it, the grid.
        let next = s.next_tick(ahead, ahead + 1_000_000, ahead + 300_000_000);
        assert_eq!(next, Next::OnSchedule(ahead + 10 * S));
    }
}

#[cfg(test)]
mod loop_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::config::{Diagnostics, Options, Source};
    use crate::hostpaths::HostPaths;
    use crate::inputs::{BuildContext, GatherError, Input, InputSpec};
    use crate::plugin::Accumulator;

    static GATHERS: AtomicUsize = AtomicUsize::new(0);
    static OVERLAP: AtomicBool = AtomicBool::new(false);
    static BUSY: AtomicBool = AtomicBool::new(false);

    struct Slow;
    impl Input for Slow {
        fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
            if BUSY.swap(true, Ordering::SeqCst) {
                OVERLAP.store(true, Ordering::SeqCst);
            }
            GATHERS.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(250));
            acc.push(acc.metric("slow").with_field("x", 1i64));
            BUSY.store(false, Ordering::SeqCst);
            Ok(())
        }
    }
    struct Failing;
    impl Input for Failing {
        fn gather(&mut self, _acc: &mut Accumulator) -> Result<(), GatherError> {
            Err(GatherError::Other("always fails".into()))
        }
    }
    struct Panicking;
    impl Input for Panicking {
        fn gather(&mut self, _acc: &mut Accumulator) -> Result<(), GatherError> {
            panic!("bug in an input")
        }
    }
    /// A registry entry for a test input.
    const fn spec(name: &'static str, build: crate::inputs::BuildFn) -> InputSpec {
        InputSpec {
            name,
            description: "",
            sample_config: "",
            build,
            test_twice: false,
        }
    }
    static SLOW: InputSpec = spec("slow", |_, _| Box::new(Slow));
    static FAILING: InputSpec = spec("failing", |_, _| Box::new(Failing));
    static PANICKING: InputSpec = spec("panicking", |_, _| Box::new(Panicking));

    fn running(spec: &'static InputSpec, interval_ms: u64) -> RunningInput {
        let src = Source::new("test.conf", String::new());
        let table = toml::de::DeTable::parse("").unwrap();
        let mut diags = Diagnostics::default();
        let env = |_: &str| None;
        let mut o = Options::new(&src, spec.name, table.get_ref(), 0, &mut diags, &env);
        let paths = HostPaths::default();
        let stats = Default::default();
        let ctx = BuildContext {
            paths: &paths,
            interval: Duration::from_millis(interval_ms),
            stats: &stats,
        };
        let mut ri = RunningInput::build(spec, &mut o, &ctx);
        ri.interval = Some(Duration::from_millis(interval_ms));
        ri
    }

    /// An input slower than its interval must skip ticks, never run twice at once; a failing
    /// and a panicking input must not stop it.
    #[test]
    fn overrunning_gathers_are_skipped_not_stacked_and_failures_stay_local() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let schedule = || InputSchedule {
            interval: Duration::from_millis(50),
            offset: Duration::ZERO,
            jitter: Duration::ZERO,
            precision: Duration::from_nanos(1),
            aligned: false,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let senders = Arc::new(vec![tx]);
        let global = Arc::new(GlobalTags::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let st: Arc<SelfStats> = Default::default();
        rt.block_on(async {
            let tasks = [&SLOW, &FAILING, &PANICKING].map(|spec| {
                tokio::spawn(input_loop(
                    running(spec, 50),
                    schedule(),
                    global.clone(),
                    senders.clone(),
                    stop_rx.clone(),
                    st.clone(),
                ))
            });
            // Wait for three metrics from the slow input (readiness, not a fixed sleep).
            for _ in 0..3 {
                tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
            }
            stop_tx.send(true).unwrap();
            for t in tasks {
                let _ = t.await;
            }
        });
        assert!(
            !OVERLAP.load(Ordering::SeqCst),
            "two gathers of one input ran at once"
        );
        // 250 ms gathers on a 50 ms interval: had ticks stacked, the channel would hold a
        // backlog; at most one more gather can have started after the third metric.
        assert!(
            GATHERS.load(Ordering::SeqCst) <= 4,
            "gathers: {}",
            GATHERS.load(Ordering::SeqCst)
        );
    }
}
