//! The wrapper every output runs in: filters, renaming, a bounded buffer that drops the oldest
//! metric when full and counts every drop, and batched flushing that keeps a failed batch.
//!
//! Retries back off: after a failed write the next attempt is not made before
//! `backoff_min * 2^(failures-1)` (capped at `backoff_max`, plus up to 25 % random jitter so
//! many agents do not retry in step), or later when the server asked so with `Retry-After`.
//! The agent loop asks [`RunningOutput::retry_in`] before a timed or batch-full flush and skips
//! the flush while it is `Some`; the shutdown flush tries once regardless. A success resets it.
//!
//! Metrics an output keeps while the rest of their batch is settled ([`WriteError::Kept`]:
//! influxdb_v2, a bucket refused for now) are set aside in a queue per bucket within the same
//! limit, and each is read only when the output says its bucket is due: they cost nothing
//! while they wait, a bucket's turn touches no other bucket's metrics, and a turn cut short
//! leaves the rest of its queue where it was. On disk a queue is the directory
//! `parked/<16 hex digits: FNV-1a 64 of the bucket>/` inside the buffer directory, with the
//! bucket name in its file `bucket` (see `parked_dir`, `open_parked`; one torn by a crash
//! does not hide its metrics: a restart tries them as the overflow's), made when first
//! needed and removed when emptied (a crash during that removal can leave it to be replayed: duplicates, never
//! loss). At most [`MAX_PARKED_QUEUES`] exist; the metrics of the buckets beyond them, or of
//! one whose queue cannot be made or written, share one more queue, the overflow
//! (`parked/overflow/`), read only when the earliest backoff of its buckets has passed, and
//! at most every 5 min (those still refused are then copied to its end); like every
//! parked metric they never count towards a full batch.
//! A full disk drops only the main queue's oldest segments (see `disk_buffer`), not parked
//! ones (copies that do not fit go to the overflow; when they do not fit there either, their
//! batch stays where it was and the flush fails: sent again, duplicates rather than loss);
//! the limit drops parked metrics first, queue by queue, the first made first (a restart
//! restores them in that order: by the time of their `bucket` file, the overflow last). The
//! copies are fsynced before their originals are forgotten, but with `buffer_disk_sync =
//! false` that the originals are gone is not: after a power cut a restart may replay them
//! beside their copies (duplicates, never loss).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::disk_buffer::{DiskBuffer, Recovery};
use super::filter::Filter;
use crate::metric::Metric;
use crate::outputs::{Output, OutputSpec, WriteError};
use crate::plugin::BuildContext;
use crate::selfstat::WriteCounts;
use wk_core::options::Options;

/// Common Telegraf output options that wk-agent accepts but does not act on.
pub const UNSUPPORTED_OUTPUT_KEYS: &[&str] = &[
    "log_level",
    "startup_error_behavior",
    "labels",
    "metricpass",
];

/// An output with its buffer.
pub struct RunningOutput {
    pub spec: &'static OutputSpec,
    pub alias: Option<String>,
    output: Box<dyn Output>,
    filter: Filter,
    rename: super::Rename,
    pub batch_size: usize,
    pub buffer_limit: usize,
    pub flush_interval: Option<Duration>,
    pub flush_jitter: Option<Duration>,
    buffer: Buffer,
    /// `buffer_strategy = "disk"`: the directory and whether to fsync; opened by
    /// [`RunningOutput::open_disk_buffer`].
    disk: Option<(PathBuf, bool)>,
    /// Drops not yet reported in the log.
    unreported_drops: u64,
    pub stats: WriteCounts,
    /// First retry delay after a failed write (doubles with each consecutive failure).
    pub backoff_min: Duration,
    /// Longest retry delay (a server's `Retry-After` may ask for more, up to 10 min).
    pub backoff_max: Duration,
    /// Consecutive failed writes.
    failures: u32,
    /// No new attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    /// Metrics set aside by a [`WriteError::Kept`] (a bucket refused for now), a queue per
    /// [`Output::kept_key`] in the order they were made (none empty): they share
    /// `buffer_limit` with `buffer` (and go first when it is passed), are not counted towards
    /// a full batch, and a queue is read only when the output says its key is due
    /// ([`Output::kept_due_at`]), so a flush with every refused bucket in its backoff costs
    /// nothing for them.
    parked: Vec<Parked>,
    /// The warning that [`MAX_PARKED_QUEUES`] was reached has been logged.
    parked_cap_warned: bool,
}

/// Metrics set aside, oldest first: those of one key (a refused bucket), or, without a key,
/// those of any (the overflow: buckets beyond [`MAX_PARKED_QUEUES`]).
struct Parked {
    key: Option<String>,
    queue: Buffer,
    /// Without a key: not walked before this instant, the earliest that any bucket set aside
    /// in it is due ([`Output::kept_due_at`] when each was set aside). With a key the output
    /// is asked instead.
    due_at: Instant,
}

/// The disk buffer's subdirectory for the metrics set aside for refused buckets: one
/// directory per bucket inside, see [`parked_dir`].
const PARKED_DIR: &str = "parked";

/// Most parked queues of one bucket an output keeps (each a directory and two open files with
/// a disk buffer); bucket names come from tags, so without a cap they would be unbounded. The
/// metrics of the refused buckets beyond it share one more queue, the overflow
/// (`parked/overflow/` on disk), walked only when the earliest of their backoffs has passed,
/// and at most every 5 min: then those of a bucket still in its backoff are copied to its
/// end, and they never count towards a full batch.
pub const MAX_PARKED_QUEUES: usize = 64;

/// The overflow queue's directory in [`PARKED_DIR`].
const OVERFLOW_DIR: &str = "overflow";

/// Longest `Retry-After` honoured (Telegraf's cap).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl RunningOutput {
    /// Reads the common options, then lets the plugin read its own. `batch_size` and
    /// `buffer_limit` are the agent-wide defaults.
    pub fn build(
        spec: &'static OutputSpec,
        opts: &mut Options<'_, '_>,
        ctx: &BuildContext<'_>,
        batch_size: usize,
        buffer_limit: usize,
    ) -> RunningOutput {
        let alias = opts.opt_string("alias");
        let flush_interval = opts.opt_period("flush_interval", crate::plugin::MIN_PERIOD);
        let flush_jitter = opts.opt_duration("flush_jitter");
        // 0 means the agent's value, as in Telegraf's models/running_output.go.
        let agent_batch_size = batch_size;
        let agent_buffer_limit = buffer_limit;
        let batch_size = opts.int("metric_batch_size", batch_size as i64, 0, i64::MAX) as usize;
        let buffer_limit =
            opts.int("metric_buffer_limit", buffer_limit as i64, 0, i64::MAX) as usize;
        let rename = super::Rename::from_options(opts);
        let filter = Filter::from_options(opts);
        opts.unsupported(UNSUPPORTED_OUTPUT_KEYS);
        let output = (spec.build)(opts, ctx);
        RunningOutput {
            alias,
            filter,
            rename,
            batch_size: if batch_size == 0 {
                agent_batch_size
            } else {
                batch_size
            },
            buffer_limit: if buffer_limit == 0 {
                agent_buffer_limit
            } else {
                buffer_limit
            },
            flush_interval,
            flush_jitter,
            ..RunningOutput::new(spec, output)
        }
    }

    /// An output with default settings (batch 1000, buffer 10000, no filter), for tools and
    /// tests that do not go through a config file.
    pub fn new(spec: &'static OutputSpec, output: Box<dyn Output>) -> RunningOutput {
        RunningOutput {
            spec,
            alias: None,
            output,
            filter: Filter::default(),
            rename: Default::default(),
            batch_size: 1000,
            buffer_limit: 10000,
            flush_interval: None,
            flush_jitter: None,
            buffer: Buffer::Memory(VecDeque::new()),
            disk: None,
            unreported_drops: 0,
            stats: WriteCounts::default(),
            backoff_min: Duration::from_secs(1),
            // Short enough that a backlog starts draining within ~15 s of the database
            // coming back (at 60 s the alerter saw every host go NoData first).
            backoff_max: Duration::from_secs(15),
            failures: 0,
            retry_at: None,
            parked: Vec::new(),
            parked_cap_warned: false,
        }
    }

    /// The plugin name and alias, as self-telemetry keys them.
    pub fn stats_key(&self) -> crate::selfstat::PluginKey {
        (self.spec.name.to_owned(), self.alias.clone())
    }

    /// The plugin name, with its alias when it has one (for logs).
    pub fn log_name(&self) -> String {
        super::log_name("outputs", self.spec.name, self.alias.as_deref())
    }

    /// Metrics waiting to be written (those set aside for a refused bucket included).
    pub fn buffered(&self) -> usize {
        self.buffer.len() + self.parked_len()
    }

    /// Metrics set aside for refused buckets.
    fn parked_len(&self) -> usize {
        self.parked.iter().map(|p| p.queue.len()).sum()
    }

    /// Asks for a disk buffer in `dir` (`buffer_strategy = "disk"`); nothing is opened yet.
    pub fn set_disk_buffer(&mut self, dir: PathBuf, sync: bool) {
        self.disk = Some((dir, sync));
    }

    /// Opens the disk buffer if one was asked for, restoring what a previous run left unsent.
    /// On failure the output keeps its memory buffer (and the error says why).
    pub fn open_disk_buffer(&mut self) -> std::io::Result<Option<Recovery>> {
        let Some((dir, sync)) = self.disk.clone() else {
            return Ok(None);
        };
        let (mut queue, mut rec) = DiskBuffer::open(&dir, self.buffer_limit, sync)?;
        // The queues of metrics set aside for refused buckets that a previous run left.
        let mut parked = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.join(PARKED_DIR)) {
            for path in entries.flatten().map(|e| e.path()) {
                // One queue that cannot be opened (damaged, out of file descriptors) is left
                // on disk as it is; the others and the main queue are restored.
                // A queue whose key file is lost (torn) holds metrics of an unknown bucket:
                // walked as the overflow is (each metric goes by its own bucket), not lost; left
                // empty, it is removed below.
                let opened = parked_key(&dir, &path)
                    .and_then(|key| Ok((key, DiskBuffer::open(&path, self.buffer_limit, sync)?)));
                let (key, (q, r)) = match opened {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::error!(output = %self.log_name(), "disk buffer: cannot open the parked queue {}, skipped: {e}", path.display());
                        continue;
                    }
                };
                if key.is_none() && !path.ends_with(OVERFLOW_DIR) && r.restored > 0 {
                    warn!(output = %self.log_name(), "disk buffer: the parked queue {} lost the name of its bucket; its {} metrics are tried as those beyond the cap", path.display(), r.restored);
                }
                rec.restored += r.restored;
                rec.truncated_bytes += r.truncated_bytes;
                // The key file is written once, when the queue is made.
                let made = std::fs::metadata(path.join(PARKED_KEY_FILE)).and_then(|m| m.modified());
                parked.push((
                    made.ok(),
                    Parked {
                        key,
                        queue: Buffer::Disk {
                            queue: q,
                            front: Vec::new(),
                        },
                        // What waits without a key is not known: walked at once.
                        due_at: Instant::now(),
                    },
                ));
            }
        }
        // In the order they were made, so that the limit drops the oldest first, as before
        // the restart; those without a key (made past the cap) after them.
        parked.sort_by(|(ma, a), (mb, b)| {
            (a.key.is_none(), ma, &a.key).cmp(&(b.key.is_none(), mb, &b.key))
        });
        let parked = parked.into_iter().map(|(_, p)| p).collect();
        // Anything already buffered in memory goes behind what the disk held (it is newer);
        // what was set aside is tried again from the main queue (set aside again if need be).
        let mut pending: Vec<Metric> = Vec::new();
        for q in self.parked.iter_mut().map(|p| &mut p.queue) {
            if let Buffer::Memory(mem) = q {
                pending.extend(mem.drain(..));
            }
        }
        if let Buffer::Memory(mem) = &mut self.buffer {
            pending.extend(mem.drain(..));
        }
        if !pending.is_empty() {
            let dropped = queue.push(&pending)?;
            self.count_drops(dropped);
        }
        self.parked = parked;
        self.buffer = Buffer::Disk {
            queue,
            front: Vec::new(),
        };
        self.prune_parked();
        // Together within the limit: the oldest, set aside, go first.
        let over = self.buffered().saturating_sub(self.buffer_limit);
        self.drop_oldest(over);
        Ok(Some(rec))
    }

    /// Counts `n` metrics dropped before they reached this buffer (the collection loop's
    /// bounded queue while a write was in flight): added and dropped, as if they had entered
    /// the buffer and been pushed out, so `added − dropped` stays what was kept.
    pub fn record_drops(&mut self, n: usize) {
        if n > 0 {
            self.stats.metrics_added += n as u64;
            self.count_drops(n);
        }
    }

    fn count_drops(&mut self, n: usize) {
        self.stats.metrics_dropped += n as u64;
        self.unreported_drops += n as u64;
    }

    /// Drops (and counts) the oldest `n` metrics: first those set aside (queue by queue, the
    /// first made first), then the buffer's.
    fn drop_oldest(&mut self, n: usize) {
        let mut left = n;
        let queues = self.parked.iter_mut().map(|p| &mut p.queue);
        for q in queues.chain([&mut self.buffer]) {
            let k = left.min(q.len());
            if k > 0
                && let Err(e) = q.drain(k)
            {
                tracing::error!("disk buffer: cannot record dropped metrics: {e}");
            }
            left -= k;
        }
        self.count_drops(n - left);
        self.prune_parked();
    }

    /// Appends `metrics` durably to the parked queue of `key` (`None`: the overflow), made
    /// when missing (on disk when the buffer is); `due` is when their bucket may be asked
    /// again. All or nothing, as [`Buffer::push_durable`].
    fn set_aside(
        &mut self,
        key: Option<&str>,
        metrics: &mut Vec<Metric>,
        due: Instant,
    ) -> std::io::Result<()> {
        let i = match self.parked.iter().position(|p| p.key.as_deref() == key) {
            Some(i) => i,
            None => {
                let queue = match (&self.buffer, &self.disk) {
                    (Buffer::Disk { .. }, Some((dir, sync))) => Buffer::Disk {
                        queue: open_parked(dir, key, self.buffer_limit, *sync)?,
                        front: Vec::new(),
                    },
                    _ => Buffer::Memory(VecDeque::new()),
                };
                // Known only once it holds metrics: an empty one would be pruned, and the
                // output told to forget the bucket's backoff (asked at every flush).
                let mut queue = queue;
                if let Err(e) = queue.push_durable(metrics) {
                    if queue.len() == 0 {
                        discard(queue);
                    } else {
                        // A directory left at start (it could not be opened then) holds
                        // metrics of its own: kept, and walked when the bucket is due.
                        self.parked.push(Parked {
                            key: key.map(str::to_owned),
                            queue,
                            due_at: due,
                        });
                    }
                    return Err(e);
                }
                self.parked.push(Parked {
                    key: key.map(str::to_owned),
                    queue,
                    due_at: due,
                });
                return Ok(());
            }
        };
        let p = &mut self.parked[i];
        p.queue.push_durable(metrics)?;
        p.due_at = p.due_at.min(due);
        Ok(())
    }

    /// Whether the `i`-th parked queue may be walked now.
    fn parked_due(&self, i: usize) -> bool {
        let p = &self.parked[i];
        let at = match &p.key {
            Some(k) => self.output.kept_due_at(k),
            None => Some(p.due_at),
        };
        at.is_none_or(|t| t <= Instant::now())
    }

    /// Forgets the parked queues left empty, with their directories, and tells the output
    /// ([`Output::forget_kept`]): a refused bucket none of whose metrics waits any more is
    /// not kept due (or in its backoff) for ever.
    fn prune_parked(&mut self) {
        let (empty, left) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.queue.len() == 0);
        self.parked = left;
        for p in empty {
            if let Some(key) = &p.key {
                self.output.forget_kept(key);
            }
            discard(p.queue);
        }
    }

    /// Filters and renames a copy of `m`, or None when a filter drops it.
    fn prepare(&mut self, m: &Metric) -> Option<Metric> {
        if !self.filter.is_empty() && !self.filter.select(m) {
            self.stats.metrics_filtered += 1;
            return None;
        }
        let mut m = m.clone();
        if !self.filter.is_empty() && !self.filter.modify(&mut m) {
            self.stats.metrics_filtered += 1;
            return None;
        }
        self.rename.apply(&mut m);
        Some(m)
    }

    /// Filters, renames and buffers a copy of `m`; when the buffer is full the oldest metric
    /// is dropped and counted.
    pub fn add(&mut self, m: &Metric) {
        self.add_all(std::slice::from_ref(m));
    }

    /// [`RunningOutput::add`] for a whole gather: the disk buffer writes (and fsyncs) them
    /// at once.
    pub fn add_all(&mut self, metrics: &[Metric]) {
        let prepared: Vec<Metric> = metrics.iter().filter_map(|m| self.prepare(m)).collect();
        if prepared.is_empty() {
            return;
        }
        let n = prepared.len();
        let limit = self.buffer_limit;
        // The metrics set aside share the limit and are older: they go first.
        let over = (self.buffered() + n).saturating_sub(limit);
        self.drop_oldest(over.min(self.parked_len()));
        let result = match &mut self.buffer {
            Buffer::Memory(mem) => {
                let mut dropped = 0;
                for m in prepared {
                    if mem.len() >= limit {
                        mem.pop_front();
                        dropped += 1;
                    }
                    mem.push_back(m);
                }
                Ok(dropped)
            }
            Buffer::Disk { queue, front } => queue.push(&prepared).inspect(|dropped| {
                // The cached head is stale once the oldest were dropped.
                if *dropped > 0 {
                    front.clear();
                }
            }),
        };
        let dropped = result.unwrap_or_else(|e| {
            tracing::error!(output = %self.log_name(), "disk buffer write failed, {n} metrics lost: {e}");
            n
        });
        self.stats.metrics_added += n as u64;
        self.count_drops(dropped);
    }

    /// True when a full batch is waiting (besides the metrics set aside for refused buckets).
    pub fn batch_ready(&self) -> bool {
        self.buffer.len() >= self.batch_size
    }

    /// Whether this output keeps its buffer on disk (opened).
    pub fn has_disk_buffer(&self) -> bool {
        matches!(self.buffer, Buffer::Disk { .. })
    }

    /// Drops since the last call (to be logged once per flush, as Telegraf's
    /// "Metric buffer overflow; N metrics have been dropped").
    pub fn take_unreported_drops(&mut self) -> u64 {
        std::mem::take(&mut self.unreported_drops)
    }

    /// How long to wait before the next write attempt, while backing off after a failure.
    pub fn retry_in(&self) -> Option<Duration> {
        let at = self.retry_at?;
        at.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Consecutive failed writes (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt after `failures` consecutive failures, without jitter.
    pub fn backoff_for(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(30);
        self.backoff_min
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max)
    }

    fn failed(&mut self, server_wait: Option<Duration>) {
        self.stats.write_errors += 1;
        self.failures = self.failures.saturating_add(1);
        let base = self.backoff_for(self.failures);
        let delay = base + jitter_up_to(base / 4);
        let delay = match server_wait {
            Some(w) => delay.max(w.min(MAX_RETRY_AFTER)),
            None => delay,
        };
        self.retry_at = Some(Instant::now() + delay);
    }

    /// The main queue (`None`), or the `i`-th parked one.
    fn queue(&mut self, q: Option<usize>) -> &mut Buffer {
        match q {
            Some(i) => &mut self.parked[i].queue,
            None => &mut self.buffer,
        }
    }

    /// Removes the first `n` metrics of a queue, `rejected` of them refused by the server.
    fn settle(&mut self, q: Option<usize>, n: usize, rejected: usize) -> usize {
        let queue = self.queue(q);
        let n = n.min(queue.len());
        let rejected = rejected.min(n);
        if n > 0
            && let Err(e) = queue.drain(n)
        {
            // The metrics were written; failing to record it means they may be sent again
            // after a restart (duplicates, never loss).
            tracing::error!(output = %self.log_name(), "disk buffer: cannot record written metrics: {e}");
        }
        self.stats.metrics_written += (n - rejected) as u64;
        self.stats.metrics_rejected += rejected as u64;
        n - rejected
    }

    /// Sets `kept` (copies of some of the first `n` metrics of queue `q`: the main one, or
    /// the overflow) aside, each at the back of the parked queue of its key, then removes the
    /// `n`. The copies are durable before the originals are forgotten. A key beyond
    /// [`MAX_PARKED_QUEUES`], or whose queue cannot take them (an I/O error), has its copies
    /// put at the end of the overflow instead, so one bucket's failure holds up neither the
    /// others nor the main queue, and nothing is set aside twice. When the overflow cannot
    /// take them either (the disk fails), the `n` stay where they are and the error is
    /// returned: the copies already set aside and the settled metrics are then sent again
    /// (duplicates), but nothing is lost.
    fn park(&mut self, q: Option<usize>, n: usize, kept: Vec<Metric>) -> std::io::Result<()> {
        let mut groups: Vec<(String, Vec<Metric>)> = Vec::new();
        for m in kept {
            let key = self.output.kept_key(&m);
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(m),
                None => groups.push((key, vec![m])),
            }
        }
        let mut rest = Vec::new();
        let mut rest_due: Option<Instant> = None;
        for (key, mut metrics) in groups {
            let due = self.output.kept_due_at(&key).unwrap_or_else(Instant::now);
            let known = self.parked.iter().any(|p| p.key.as_deref() == Some(&key));
            let buckets = self.parked.iter().filter(|p| p.key.is_some()).count();
            if !known && buckets >= MAX_PARKED_QUEUES {
                if !std::mem::replace(&mut self.parked_cap_warned, true) {
                    warn!(output = %self.log_name(), "more than {MAX_PARKED_QUEUES} refused buckets wait: the metrics of bucket {key:?} and later ones share one queue");
                }
            } else if let Err(e) = self.set_aside(Some(&key), &mut metrics, due) {
                warn!(output = %self.log_name(), "cannot set aside the metrics kept for bucket {key:?}, put with the overflow: {e}");
            }
            if !metrics.is_empty() {
                rest_due = Some(rest_due.map_or(due, |d| d.min(due)));
                rest.append(&mut metrics);
            }
        }
        if let Some(due) = rest_due {
            self.set_aside(None, &mut rest, due)?;
        }
        if let Err(e) = self.queue(q).drain(n) {
            tracing::error!(output = %self.log_name(), "disk buffer: cannot record written metrics: {e}");
        }
        Ok(())
    }

    /// Writes what is buffered, oldest first, one batch at a time; stops at the first failed
    /// batch, which stays at the head of its queue. Metrics the server refused for good
    /// ([`WriteError::Rejected`]) are removed, logged and counted, and do not stop the
    /// flush; nor do metrics refused for now on their own ([`WriteError::Kept`]: a bucket the
    /// token may not write): they are set aside in the parked queue of their bucket, and the
    /// flush goes on with the metrics behind them. The parked queues are walked first, each
    /// only when the output says its bucket is due ([`Output::kept_due_at`]), and only as far as
    /// the bucket accepts: what it refuses again, or what a failure leaves, stays where it
    /// is, untouched. A flush that settled nothing and received a refusal fails (and backs
    /// off) as any other; metrics only skipped for a bucket's backoff are no failure. Returns
    /// the number of metrics stored. Does not look at the backoff: the caller does (see
    /// [`RunningOutput::retry_in`]).
    pub fn flush(&mut self) -> Result<usize, WriteError> {
        let mut t = Tally::default();
        let walked = (0..self.parked.len())
            .filter(|&i| self.parked_due(i))
            .collect::<Vec<_>>()
            .into_iter()
            .try_for_each(|i| {
                // The overflow's next turn: the earliest bucket it sets aside again, at the
                // latest in 10 min (a queue that cannot be read is not retried every flush),
                // and not before 5 min (buckets refused at different times would otherwise
                // have it read and rewritten whole at nearly every flush); now when the walk
                // is cut short (what it did not reach is not known).
                let many = self.parked[i].key.is_none();
                let started = Instant::now();
                if many {
                    self.parked[i].due_at = started + MAX_RETRY_AFTER;
                }
                let walked = self.walk(Some(i), &mut t);
                if many {
                    let p = &mut self.parked[i];
                    p.due_at = match walked {
                        Ok(()) => p.due_at.max(started + OVERFLOW_GAP),
                        Err(_) => Instant::now(),
                    };
                }
                walked
            });
        self.prune_parked();
        walked?;
        self.walk(None, &mut t)?;
        if let Some(reason) = t.refused.filter(|_| !t.settled_any) {
            // Nothing could be written and a bucket refused: as after any failure, the
            // output backs off.
            let e = WriteError::Retry(format!("every metric kept for a later retry: {reason}"));
            self.failed(None);
            return Err(e);
        }
        self.failures = 0;
        self.retry_at = None;
        Ok(t.written)
    }

    /// One pass over a queue (the main one for `None`, else the `i`-th parked one): each
    /// metric waiting at its start is tried once; a parked queue of one bucket only up to its
    /// first metric kept again (its bucket refused).
    fn walk(&mut self, q: Option<usize>, t: &mut Tally) -> Result<(), WriteError> {
        let mut left = self.queue(q).len();
        let one_bucket = q.is_some_and(|i| self.parked[i].key.is_some());
        while left > 0 {
            let n = self.batch_size.min(left);
            let queue = match q {
                Some(i) => &mut self.parked[i].queue,
                None => &mut self.buffer,
            };
            let batch = match (queue.front(n), q) {
                (Ok(batch), _) => batch,
                (Err(e), Some(i)) => {
                    // One bucket's unreadable file holds up that bucket only.
                    let key = self.parked[i].key.as_deref().unwrap_or("the overflow");
                    tracing::error!(output = %self.log_name(), "disk buffer: cannot read the metrics set aside for {key:?}, skipped: {e}");
                    return Ok(());
                }
                (Err(e), None) => {
                    return Err(WriteError::Retry(format!("disk buffer: cannot read: {e}")));
                }
            };
            let n = batch.len();
            if n == 0 {
                break;
            }
            left -= n;
            match self.output.write(batch) {
                Ok(()) => {
                    t.written += self.settle(q, n, 0);
                    t.settled_any = true;
                }
                Err(WriteError::Rejected { rejected, reason }) => {
                    warn!(output = %self.log_name(), batch = n, rejected,
                        "metrics rejected by the server and dropped: {reason}");
                    t.written += self.settle(q, n, rejected);
                    t.settled_any = true;
                }
                Err(WriteError::Kept {
                    mut kept,
                    rejected,
                    reason,
                    refused,
                }) => {
                    kept.sort_unstable();
                    kept.dedup();
                    kept.retain(|&i| i < n);
                    let copies: Vec<Metric> = match one_bucket {
                        true => Vec::new(),
                        false => kept.iter().map(|&i| batch[i].clone()).collect(),
                    };
                    debug!(output = %self.log_name(), batch = n, kept = kept.len(),
                        "metrics set aside for a later retry, the others settled: {reason}");
                    if refused {
                        t.refused = Some(reason);
                    }
                    if one_bucket {
                        // A parked queue holds one bucket: it is settled up to its first
                        // metric kept again, and waits from there, as it is, for its next
                        // turn (nothing is copied or rewritten).
                        let first = kept.first().copied().unwrap_or(n);
                        t.written += self.settle(q, first, rejected);
                        t.settled_any |= first > 0;
                        if first < n {
                            return Ok(());
                        }
                        continue;
                    }
                    let settled = n - copies.len();
                    let rejected = rejected.min(settled);
                    if let Err(e) = self.park(q, n, copies) {
                        let e = format!("disk buffer: cannot set aside kept metrics: {e}");
                        return Err(WriteError::Retry(e));
                    }
                    t.settled_any |= settled > 0;
                    self.stats.metrics_written += (settled - rejected) as u64;
                    self.stats.metrics_rejected += rejected as u64;
                    t.written += settled - rejected;
                }
                Err(e) => {
                    let (done, rejected, wait) = match &e {
                        WriteError::Partial {
                            done,
                            rejected,
                            retry_after,
                            ..
                        } => (*done, *rejected, *retry_after),
                        WriteError::RetryAfter { after, .. } => (0, 0, Some(*after)),
                        _ => (0, 0, None),
                    };
                    // The rest stays at the head of its queue, untouched.
                    self.settle(q, done.min(n), rejected);
                    self.failed(wait);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Closes the plugin.
    pub fn close(&mut self) {
        self.output.close();
        // The disk buffer's lock goes with it, for the output a reload opens next; what
        // it holds stays on disk.
        if matches!(self.buffer, Buffer::Disk { .. }) {
            self.buffer = Buffer::Memory(VecDeque::new());
        }
        self.parked.retain(|p| matches!(p.queue, Buffer::Memory(_)));
    }

    /// At a stop or reload: takes what waits in the memory buffer, oldest first, for the
    /// output that replaces this one (a disk buffer keeps what it holds on disk: nothing is
    /// taken).
    pub fn take_unsent(&mut self) -> Vec<Metric> {
        let mut out = Vec::new();
        // Those set aside are the older.
        let parked = self.parked.iter_mut().map(|p| &mut p.queue);
        for q in parked.chain([&mut self.buffer]) {
            if let Buffer::Memory(m) = q {
                out.extend(m.drain(..));
            }
        }
        out
    }

    /// At a stop or reload: the plugin's state for the output that replaces this one.
    pub fn hand_over(&mut self) -> Option<crate::outputs::HandOver> {
        self.output.hand_over()
    }

    /// Takes the state the output this one replaces handed over.
    pub fn take_over(&mut self, state: crate::outputs::HandOver) {
        self.output.take_over(state);
    }

    /// Puts back, ahead of anything newer, what the output this one replaces left unsent
    /// (already filtered and renamed by it: as they are). Beyond the buffer limit the oldest
    /// are dropped and counted. Called before the disk buffer opens, which takes them over.
    pub fn restore_unsent(&mut self, metrics: Vec<Metric>) {
        let n = metrics.len();
        let Buffer::Memory(mem) = &mut self.buffer else {
            self.count_drops(n);
            return;
        };
        let newer = std::mem::take(mem);
        mem.extend(metrics);
        mem.extend(newer);
        let excess = mem.len().saturating_sub(self.buffer_limit);
        mem.drain(..excess);
        self.count_drops(excess);
    }
}

/// What a flush has done so far.
#[derive(Default)]
struct Tally {
    written: usize,
    /// Some metric left its queue (stored or rejected).
    settled_any: bool,
    /// The last refusal (401/403) received in this flush.
    refused: Option<String>,
}

/// Where metrics wait: in memory, or in a crash-safe queue on disk whose first batch is
/// cached in memory while it is being written.
enum Buffer {
    Memory(VecDeque<Metric>),
    Disk {
        queue: DiskBuffer,
        front: Vec<Metric>,
    },
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Memory(m) => m.len(),
            Buffer::Disk { queue, .. } => queue.len(),
        }
    }

    /// The oldest `n` metrics (fewer when fewer wait).
    fn front(&mut self, n: usize) -> std::io::Result<&[Metric]> {
        match self {
            Buffer::Memory(m) => {
                let n = n.min(m.len());
                Ok(&m.make_contiguous()[..n])
            }
            Buffer::Disk { queue, front } => {
                if front.len() < n.min(queue.len()) {
                    *front = queue.peek(n)?.0;
                }
                let n = n.min(front.len());
                Ok(&front[..n])
            }
        }
    }

    /// Moves `metrics` to the end, on disk durably (fsynced) whatever `buffer_disk_sync`
    /// says: the caller forgets their originals next. All or nothing: on an error `metrics`
    /// is left as it was. Not bounded by the limit: the caller forgets as many originals.
    fn push_durable(&mut self, metrics: &mut Vec<Metric>) -> std::io::Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        match self {
            Buffer::Memory(m) => m.extend(metrics.drain(..)),
            Buffer::Disk { queue, .. } => {
                queue.push_durable(metrics)?;
                metrics.clear();
            }
        }
        Ok(())
    }

    /// Forgets the oldest `n` metrics.
    fn drain(&mut self, n: usize) -> std::io::Result<()> {
        match self {
            Buffer::Memory(m) => {
                m.drain(..n.min(m.len()));
                Ok(())
            }
            Buffer::Disk { queue, front } => {
                front.drain(..n.min(front.len()));
                queue.ack(n)
            }
        }
    }
}

/// The directory of the parked queue for `key` in the buffer directory `dir`: `parked/`
/// and the 64-bit FNV-1a hash of the key in 16 hex digits, so any bucket name (a tag's value,
/// up to 64 KiB) gives a valid file name; the key itself is in its [`PARKED_KEY_FILE`].
fn parked_dir(dir: &Path, key: &str) -> PathBuf {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    dir.join(PARKED_DIR).join(format!("{hash:016x}"))
}

/// The file in a parked queue's directory holding its key (the bucket name), as is.
const PARKED_KEY_FILE: &str = "bucket";

/// The key of the parked queue in `path` (a directory of `parked/` in the buffer directory
/// `dir`); None when it has none (the overflow, or a key file missing or torn: its key does
/// not hash to its name).
fn parked_key(dir: &Path, path: &Path) -> std::io::Result<Option<String>> {
    let key = match std::fs::read(path.join(PARKED_KEY_FILE)) {
        Ok(k) => String::from_utf8(k).ok(),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => None,
        Err(e) => return Err(e),
    };
    Ok(key.filter(|k| parked_dir(dir, k) == path))
}

/// Opens (or makes) the parked queue for `key` (`None`: the overflow, [`OVERFLOW_DIR`]) in
/// the buffer directory `dir`. A new directory gets its key file first, then is fsynced with
/// its parents, so the metrics set aside in it survive a power cut and are found again by
/// their key: the key file is written whole or not at all (a temporary file, fsynced, then
/// renamed). A directory holding another key (a hash collision) is an error: that key's
/// metrics go to the overflow. One whose key file is torn (it does not hash to its name) is
/// made again when its queue is empty; holding metrics (then those of an unknown bucket,
/// walked as the overflow's after a restart) it is an error too.
fn open_parked(
    dir: &Path,
    key: Option<&str>,
    limit: usize,
    sync: bool,
) -> std::io::Result<DiskBuffer> {
    let path = match key {
        Some(key) => parked_dir(dir, key),
        None => dir.join(PARKED_DIR).join(OVERFLOW_DIR),
    };
    if let Some(key) = key {
        let key_file = path.join(PARKED_KEY_FILE);
        match std::fs::read(&key_file) {
            Ok(k) if k == key.as_bytes() => return Ok(DiskBuffer::open(&path, limit, sync)?.0),
            Ok(k) => {
                let collision = String::from_utf8(k).is_ok_and(|k| parked_dir(dir, &k) == path);
                if collision || !DiskBuffer::open(&path, limit, sync)?.0.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("{} holds another bucket's metrics", path.display()),
                    ));
                }
                std::fs::remove_dir_all(&path)?;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&path)?;
        let tmp = path.join(format!("{PARKED_KEY_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, key.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &key_file)?;
    }
    let (queue, _) = DiskBuffer::open(&path, limit, sync)?;
    for d in [path, dir.join(PARKED_DIR), dir.to_owned()] {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(queue)
}

/// Closes an empty parked queue and removes its directory when on disk.
fn discard(queue: Buffer) {
    let path = match &queue {
        Buffer::Disk { queue, .. } => Some(queue.dir().to_owned()),
        Buffer::Memory(_) => None,
    };
    // Closed (its lock released) before its directory goes.
    drop(queue);
    if let Some(path) = path
        && let Err(e) = std::fs::remove_dir_all(path)
    {
        debug!("cannot remove an empty parked queue: {e}");
    }
}

/// The least time between two reads of the overflow queue (each reads and rewrites it whole).
const OVERFLOW_GAP: Duration = Duration::from_secs(300);

/// A random delay in `0..max` (collection and flush jitter, retry backoff).
pub fn jitter_up_to(max: Duration) -> Duration {
    match max.as_nanos().min(u64::MAX as u128) as u64 {
        0 => Duration::ZERO,
        n => Duration::from_nanos(fastrand::u64(..n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An output that answers from a script and records what it was handed.
    struct Scripted {
        answers: Vec<Result<(), WriteError>>,
        seen: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl Output for Scripted {
        fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError> {
            let times = metrics.iter().map(|m| m.time).collect();
            self.seen.lock().map(|mut s| s.push(times)).ok();
            if self.answers.is_empty() {
                Ok(())
            } else {
                self.answers.remove(0)
            }
        }
    }

    fn scripted(
        answers: Vec<Result<(), WriteError>>,
    ) -> (RunningOutput, Arc<Mutex<Vec<Vec<i64>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Scripted {
            answers,
            seen: seen.clone(),
        };
        let spec = crate::outputs::find("file").expect("file output is registered");
        (RunningOutput::new(spec, Box::new(out)), seen)
    }

    fn fill(ro: &mut RunningOutput, n: i64) {
        for t in 0..n {
            ro.add(&Metric::new("m", t).with_field("v", t));
        }
    }

    /// What a reload hands over goes ahead of newer metrics, as is; beyond the limit the
    /// oldest are dropped and counted.
    #[test]
    fn unsent_metrics_handed_over_keep_their_order_and_the_limit() {
        let (mut old, _) = scripted(vec![]);
        fill(&mut old, 3);
        let unsent = old.take_unsent();
        assert_eq!(old.buffered(), 0);
        let (mut new, seen) = scripted(vec![]);
        new.buffer_limit = 3;
        new.add(&Metric::new("m", 3).with_field("v", 3i64));
        new.restore_unsent(unsent);
        assert_eq!((new.buffered(), new.stats.metrics_dropped), (3, 1));
        assert_eq!(new.flush(), Ok(3));
        assert_eq!(*seen.lock().unwrap(), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn rejected_metrics_leave_the_buffer_and_the_flush_goes_on() {
        let (mut ro, seen) = scripted(vec![Err(WriteError::Rejected {
            rejected: 1,
            reason: "type conflict".into(),
        })]);
        ro.batch_size = 3;
        fill(&mut ro, 5);
        assert_eq!(ro.flush(), Ok(4));
        assert_eq!(ro.buffered(), 0);
        assert_eq!(ro.stats.metrics_written, 4);
        assert_eq!(ro.stats.metrics_rejected, 1);
        assert_eq!(ro.stats.write_errors, 0);
        assert_eq!(*seen.lock().unwrap(), vec![vec![0, 1, 2], vec![3, 4]]);
    }

    #[test]
    fn a_partial_batch_settles_its_prefix_and_keeps_the_rest() {
        let (mut ro, seen) = scripted(vec![Err(WriteError::Partial {
            done: 2,
            rejected: 0,
            reason: "second half: HTTP 503".into(),
            retry_after: None,
        })]);
        ro.batch_size = 4;
        fill(&mut ro, 6);
        assert!(matches!(
            ro.flush(),
            Err(WriteError::Partial { done: 2, .. })
        ));
        assert_eq!(ro.buffered(), 4);
        assert_eq!(ro.stats.metrics_written, 2);
        assert!(ro.retry_in().is_some());
        assert_eq!(ro.flush(), Ok(4));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![0, 1, 2, 3], vec![2, 3, 4, 5]]
        );
        assert_eq!(ro.retry_in(), None);
    }

    #[test]
    fn a_failed_batch_stays_and_backs_off_exponentially() {
        let (mut ro, _) = scripted(vec![
            Err(WriteError::Retry("down".into())),
            Err(WriteError::Retry("down".into())),
            Err(WriteError::Retry("down".into())),
        ]);
        fill(&mut ro, 3);
        for k in 1..=3u32 {
            assert!(ro.flush().is_err());
            assert_eq!(ro.buffered(), 3);
            let wait = ro.retry_in().expect("backing off");
            let base = Duration::from_secs(1 << (k - 1));
            assert!(wait <= base + base / 4, "{k}: {wait:?}");
            assert!(wait > base - Duration::from_millis(100), "{k}: {wait:?}");
        }
        assert_eq!(ro.stats.write_errors, 3);
        assert_eq!(ro.flush(), Ok(3));
        assert_eq!(ro.consecutive_failures(), 0);
    }

    fn kept(first: bool, refused: bool) -> Result<(), WriteError> {
        Err(WriteError::Kept {
            kept: if first { vec![0] } else { vec![] },
            rejected: 0,
            reason: "bucket refused".into(),
            refused,
        })
    }

    /// Regression (review of 1d28d1f): a flush that only skipped metrics of a bucket in its
    /// backoff (no refusal received) was an error, counted and backed off.
    #[test]
    fn metrics_only_skipped_for_a_backoff_are_no_failure() {
        let (mut ro, _) = scripted(vec![kept(true, false)]);
        fill(&mut ro, 1);
        assert_eq!(ro.flush(), Ok(0));
        assert_eq!((ro.stats.write_errors, ro.retry_in()), (0, None));
        let (mut ro, _) = scripted(vec![kept(true, true)]);
        fill(&mut ro, 1);
        assert!(ro.flush().is_err(), "a refusal received, nothing written");
        assert_eq!(ro.stats.write_errors, 1);
    }

    /// Regression (review of 1d28d1f): a walk of the kept metrics cut short by a 5xx left
    /// those kept again during it behind the newer ones it had not reached.
    #[test]
    fn a_walk_of_kept_metrics_cut_short_keeps_their_order() {
        let (mut ro, seen) = scripted(vec![
            kept(true, true),
            kept(true, true),
            kept(true, true),
            Ok(()),
            Err(WriteError::Retry("HTTP 500".into())),
        ]);
        ro.batch_size = 1;
        fill(&mut ro, 3);
        assert!(ro.flush().is_err());
        assert!(ro.flush().is_err());
        assert_eq!((ro.buffered(), ro.stats.metrics_written), (2, 1));
        seen.lock().unwrap().clear();
        assert_eq!(ro.flush(), Ok(2));
        assert_eq!(*seen.lock().unwrap(), vec![vec![1], vec![2]]);
    }

    /// An output that keeps the metrics whose tag `k` it refuses, sets them aside by that
    /// tag, and says a key is due when it is in `due`.
    struct ByKey {
        refuse: Arc<Mutex<Vec<&'static str>>>,
        due: Arc<Mutex<Vec<&'static str>>>,
        seen: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl Output for ByKey {
        fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError> {
            self.seen
                .lock()
                .unwrap()
                .push(metrics.iter().map(|m| m.time).collect());
            let refuse = self.refuse.lock().unwrap();
            let kept: Vec<usize> = (0..metrics.len())
                .filter(|&i| metrics[i].tag("k").is_some_and(|k| refuse.contains(&k)))
                .collect();
            match kept.is_empty() {
                true => Ok(()),
                false => Err(WriteError::Kept {
                    kept,
                    rejected: 0,
                    reason: "refused".into(),
                    refused: true,
                }),
            }
        }

        fn kept_key(&self, m: &Metric) -> String {
            m.tag("k").unwrap_or("").to_owned()
        }

        fn kept_due_at(&self, key: &str) -> Option<Instant> {
            let due = self.due.lock().unwrap().contains(&key);
            (!due).then(|| Instant::now() + Duration::from_secs(3600))
        }
    }

    /// Regression (review of 8d62f7a): one bucket falling due walked (and rewrote) every
    /// bucket's parked metrics. Only the due bucket's queue is read.
    #[test]
    fn one_bucket_falling_due_reads_only_its_own_parked_metrics() {
        let refuse = Arc::new(Mutex::new(vec!["a", "b"]));
        let due = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = ByKey {
            refuse: refuse.clone(),
            due: due.clone(),
            seen: seen.clone(),
        };
        let spec = crate::outputs::find("file").expect("file output is registered");
        let mut ro = RunningOutput::new(spec, Box::new(out));
        for t in 0..6 {
            let k = ["a", "b"][t as usize % 2];
            ro.add(&Metric::new("m", t).with_field("v", t).with_tag("k", k));
        }
        assert!(ro.flush().is_err(), "both refused, nothing written");
        seen.lock().unwrap().clear();
        *refuse.lock().unwrap() = Vec::new();
        *due.lock().unwrap() = vec!["a"];
        assert_eq!(ro.flush(), Ok(3));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![0, 2, 4]],
            "`b` is not read"
        );
        assert_eq!(ro.buffered(), 3);
    }

    /// Regression (review of 0c78aa3): every refused bucket (a tag's value) got its own
    /// queue, so the queues (on disk a directory and two files open each) were unbounded.
    ///
    /// Regression (review of bbbd866): the metrics of the buckets beyond the cap were put
    /// back in the main queue, so once they filled a batch every gather started a flush that
    /// read, re-encoded and fsynced them all again (~200 MB a gather at a limit of a
    /// million). They share the overflow queue, are no batch, and are not read before the
    /// earliest of their buckets is due; then only those of the buckets still refused are
    /// copied again.
    #[test]
    fn refused_buckets_beyond_the_cap_wait_in_the_overflow_untouched() {
        let keys: Vec<&'static str> = (0..MAX_PARKED_QUEUES + 2)
            .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
            .collect();
        let (refuse, due) = (Arc::new(Mutex::new(keys.clone())), Arc::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = ByKey {
            refuse: refuse.clone(),
            due: Arc::clone(&due),
            seen: seen.clone(),
        };
        let spec = crate::outputs::find("file").expect("file output is registered");
        let mut ro = RunningOutput::new(spec, Box::new(out));
        let dir = tempfile::tempdir().unwrap();
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        ro.batch_size = 2;
        for (t, k) in keys.iter().enumerate() {
            let t = t as i64;
            ro.add(&Metric::new("m", t).with_field("v", t).with_tag("k", *k));
        }
        assert!(ro.flush().is_err(), "every bucket refused");
        assert_eq!(ro.parked.len(), MAX_PARKED_QUEUES + 1, "and the overflow");
        assert_eq!((ro.buffered(), ro.buffer.len()), (keys.len(), 0));
        assert!(!ro.batch_ready(), "the two beyond the cap are no batch");
        seen.lock().unwrap().clear();
        let before = super::bucket_tests::files(dir.path());
        for _ in 0..3 {
            assert_eq!(ro.flush(), Ok(0));
        }
        assert!(seen.lock().unwrap().is_empty(), "nothing is due");
        assert_eq!(super::bucket_tests::files(dir.path()), before);
        // The earliest backoff in the overflow passes: `k65` is written, `k64` copied once.
        refuse.lock().unwrap().pop();
        *due.lock().unwrap() = vec![keys[MAX_PARKED_QUEUES + 1]];
        let overflow = ro.parked.iter_mut().find(|p| p.key.is_none()).unwrap();
        overflow.due_at = Instant::now();
        assert_eq!(ro.flush(), Ok(1));
        assert_eq!(*seen.lock().unwrap(), vec![vec![64, 65]]);
        assert_eq!((ro.buffered(), ro.buffer.len()), (keys.len() - 1, 0));
        assert!(!ro.parked_due(MAX_PARKED_QUEUES), "`k64` is in its backoff");
        // `k64` due at every flush (refused again, copied with its due time now): the
        // overflow, read whole once, is not read again before 5 min.
        *due.lock().unwrap() = vec![keys[MAX_PARKED_QUEUES]];
        let overflow = ro.parked.iter_mut().find(|p| p.key.is_none()).unwrap();
        overflow.due_at = Instant::now();
        seen.lock().unwrap().clear();
        let _ = ro.flush();
        assert_eq!(*seen.lock().unwrap(), vec![vec![64]]);
        let _ = ro.flush();
        assert_eq!(seen.lock().unwrap().len(), 1, "not read again so soon");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (ro, _) = scripted(vec![]);
        let secs: Vec<u64> = (1..=9).map(|k| ro.backoff_for(k).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 15, 15, 15, 15, 15]);
        assert_eq!(ro.backoff_for(u32::MAX), Duration::from_secs(15));
    }

    #[test]
    fn retry_after_is_honoured_up_to_ten_minutes() {
        let (mut ro, _) = scripted(vec![
            Err(WriteError::RetryAfter {
                after: Duration::from_secs(30),
                reason: "429".into(),
            }),
            Err(WriteError::RetryAfter {
                after: Duration::from_secs(3600),
                reason: "429".into(),
            }),
        ]);
        fill(&mut ro, 1);
        assert!(ro.flush().is_err());
        let w = ro.retry_in().unwrap();
        assert!(
            w > Duration::from_secs(29) && w <= Duration::from_secs(30),
            "{w:?}"
        );
        assert!(ro.flush().is_err());
        let w = ro.retry_in().unwrap();
        assert!(
            w > Duration::from_secs(599) && w <= MAX_RETRY_AFTER,
            "{w:?}"
        );
    }
}

/// influxdb_v2 with `bucket_tag` through the buffer: a bucket refused for now (401/403) and
/// the ways a flush must not multiply requests or grow the disk buffer.
#[cfg(test)]
mod bucket_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An influxdb_v2 output with `bucket_tag = "bucket"` against a test server answering
    /// `answer`, in a `RunningOutput` with batches of `batch`.
    /// The test server's answer: 403 for bucket `secret`, 204 for the others.
    fn refuse_secret(line: &str) -> (&'static str, &'static str) {
        match line.contains("bucket=secret") {
            true => ("403 Forbidden", "no"),
            false => ("204 No Content", ""),
        }
    }

    /// [`routed`] to a server that refuses bucket `secret`, with a disk buffer in `dir`.
    fn secret_refused_on_disk(
        dir: &std::path::Path,
        batch: usize,
    ) -> (RunningOutput, Arc<Mutex<Vec<String>>>) {
        let (mut ro, seen) = routed(refuse_secret, batch);
        ro.set_disk_buffer(dir.to_owned(), false);
        ro.open_disk_buffer().unwrap();
        (ro, seen)
    }

    fn routed(
        answer: fn(&str) -> (&'static str, &'static str),
        batch: usize,
    ) -> (RunningOutput, Arc<Mutex<Vec<String>>>) {
        let (url, seen) = crate::common::http::test_server(answer);
        let paths = crate::hostpaths::HostPaths::default();
        let stats = Default::default();
        let ctx = crate::plugin::BuildContext {
            paths: &paths,
            interval: Duration::from_secs(10),
            stats: &stats,
        };
        let spec = crate::outputs::find("influxdb_v2").expect("registered");
        let (out, said) = wk_core::testing::read_table(
            &format!(
                "[influxdb_v2]\n  urls = [\"{url}\"]\n  bucket = \"main\"\n  bucket_tag = \"bucket\"\n"
            ),
            |o| (spec.build)(o, &ctx),
        );
        assert!(said.is_empty(), "{said:?}");
        let mut ro = RunningOutput::new(spec, out);
        ro.batch_size = batch;
        (ro, seen)
    }

    /// Regression (review of 0c78aa3): a bucket whose metrics could not be set aside (here a
    /// file where its directory goes) failed the flush after the other buckets' copies were
    /// made, so the main queue stalled and each retry set those aside again (duplicates).
    /// Only that bucket's metrics go to the overflow; the others are set aside, once.
    #[test]
    fn a_bucket_that_cannot_be_set_aside_holds_up_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, seen) = routed(
            |line| match line.contains("bucket=a") {
                true => ("204 No Content", ""),
                false => ("403 Forbidden", "no"),
            },
            3,
        );
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        std::fs::create_dir_all(dir.path().join(PARKED_DIR)).unwrap();
        std::fs::write(parked_dir(dir.path(), "b"), "").unwrap();
        three_buckets(&mut ro, 0..9);
        assert_eq!(ro.flush(), Ok(3));
        assert_eq!(buckets(&seen), ["a", "secret", "b", "a", "a"]);
        assert_eq!(
            (ro.buffered(), ro.parked_len()),
            (6, 6),
            "`b` in the overflow"
        );
        assert_eq!(ro.retry_in(), None);
        for _ in 0..3 {
            assert_eq!(ro.flush(), Ok(0), "both in their backoff");
        }
        assert!(buckets(&seen).is_empty());
        assert_eq!(
            (ro.buffered(), ro.parked_len()),
            (6, 6),
            "nothing set aside twice"
        );
        assert_eq!(ro.stats.metrics_dropped, 0);
    }

    /// Regression (review of 0c78aa3): a parked queue's directory was named after its bucket
    /// with `%XX` escapes, so a long non-ASCII bucket name (43 Cyrillic letters) made a name
    /// over 255 bytes and could never be set aside. Any name fits; a restart finds it again.
    #[test]
    fn a_long_non_ascii_bucket_name_is_set_aside_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let refuse_long = |line: &str| match line.contains("bucket=a") {
            true => ("204 No Content", ""),
            false => ("403 Forbidden", "no"),
        };
        let long = "я".repeat(43);
        let (mut ro, _) = routed(refuse_long, 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        for t in 0..4 {
            let bucket = if t % 2 == 0 { "a" } else { long.as_str() };
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", bucket),
            );
        }
        assert_eq!(ro.flush(), Ok(2));
        assert_eq!((ro.buffered(), ro.parked_len()), (2, 2));
        ro.close();
        let (mut ro, seen) = routed(|_| ("204 No Content", ""), 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        assert_eq!((ro.buffered(), ro.parked_len()), (2, 2), "still set aside");
        assert_eq!(ro.flush(), Ok(2));
        assert_eq!(buckets(&seen).len(), 1);
        assert!(!parked_dir(dir.path(), &long).exists());
    }

    /// Regression (review of bbbd866): a parked queue was registered before its first
    /// metrics were pushed; when that push failed, the next flush pruned the empty queue and
    /// so forgot the bucket's backoff: it was asked again at every flush.
    #[test]
    fn a_bucket_whose_first_set_aside_fails_keeps_its_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, seen) = secret_refused_on_disk(dir.path(), 4);
        three_buckets(&mut ro, 0..3);
        super::super::disk_buffer::FAIL_DURABLE.set(true);
        let _ = ro.flush();
        super::super::disk_buffer::FAIL_DURABLE.set(false);
        assert!(ro.parked.is_empty(), "no queue left empty");
        assert!(!parked_dir(dir.path(), "secret").exists());
        assert_eq!(buckets(&seen), ["a", "secret", "b"]);
        three_buckets(&mut ro, 3..6);
        let _ = ro.flush();
        assert!(
            !buckets(&seen).contains(&"secret".to_owned()),
            "in its backoff"
        );
    }

    /// Regression (review of bbbd866): kept metrics that no queue could take (the disk
    /// failing) were counted dropped and their intact originals forgotten. The batch stays
    /// where it was and the flush fails: its metrics are sent again (duplicates), not lost.
    #[test]
    fn kept_metrics_no_queue_can_take_stay_where_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, seen) = secret_refused_on_disk(dir.path(), 4);
        three_buckets(&mut ro, 0..3);
        super::super::disk_buffer::FAIL_DURABLE.set(true);
        let failed = ro.flush();
        super::super::disk_buffer::FAIL_DURABLE.set(false);
        assert!(matches!(failed, Err(WriteError::Retry(_))), "{failed:?}");
        assert_eq!((ro.buffer.len(), ro.stats.metrics_dropped), (3, 0));
        assert_eq!(buckets(&seen), ["a", "secret", "b"]);
        assert_eq!(ro.flush(), Ok(2), "sent again");
        assert_eq!(buckets(&seen), ["a", "b"]);
        assert_eq!((ro.buffered(), ro.parked_len()), (1, 1));
    }

    /// Regression (review of bbbd866): a torn key file (a full disk or a power cut while it
    /// was written) made its bucket look like a hash collision for ever, and a restart
    /// ignored the directory with the metrics in it. Empty, it is made again; holding
    /// metrics, a restart tries them as those beyond the cap: they are written, not lost.
    #[test]
    fn a_torn_bucket_key_file_blocks_nothing_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = secret_refused_on_disk(dir.path(), 4);
        let secret = parked_dir(dir.path(), "secret");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join(PARKED_KEY_FILE), "sec").unwrap();
        three_buckets(&mut ro, 0..3);
        assert_eq!(ro.flush(), Ok(2));
        let own = ro.parked.iter().any(|p| p.key.as_deref() == Some("secret"));
        assert!(own, "set aside in its own queue");
        ro.close();
        std::fs::write(secret.join(PARKED_KEY_FILE), "").unwrap();
        let (mut ro, seen) = routed(|_| ("204 No Content", ""), 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        assert_eq!(ro.buffered(), 1, "restored");
        assert_eq!(ro.flush(), Ok(1));
        assert_eq!(buckets(&seen), ["secret"]);
        assert!(!secret.exists());
    }

    /// Regression (review of bbbd866): a restart put the parked queues in the order of
    /// their bucket names, so the limit then dropped whole buckets alphabetically instead of
    /// the oldest queue first. They are restored in the order they were made.
    #[test]
    fn a_restart_keeps_the_parked_queues_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let refuse = |line: &str| match line.contains("bucket=ok") {
            true => ("204 No Content", ""),
            false => ("403 Forbidden", "no"),
        };
        let (mut ro, _) = routed(refuse, 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        for (t, bucket) in [(0, "z"), (1, "a")] {
            let m = Metric::new("m", t).with_field("v", t);
            ro.add(&m.with_tag("bucket", bucket));
            assert!(ro.flush().is_err());
        }
        ro.close();
        // Made a minute, then half a minute ago (file times may be coarser than the test).
        let now = std::time::SystemTime::now();
        for (bucket, ago) in [("z", 60), ("a", 30)] {
            let key_file = parked_dir(dir.path(), bucket).join(PARKED_KEY_FILE);
            let f = std::fs::File::options().write(true).open(key_file).unwrap();
            f.set_modified(now - Duration::from_secs(ago)).unwrap();
        }
        let (mut ro, _) = routed(refuse, 4);
        ro.buffer_limit = 2;
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        let m = Metric::new("m", 2).with_field("v", 2i64);
        ro.add(&m.with_tag("bucket", "ok"));
        let left: Vec<_> = ro.parked.iter().map(|p| p.key.as_deref()).collect();
        assert_eq!(left, [Some("a")], "`z`, made first, went first");
    }

    /// Regression (review of 8d62f7a): a parked segment that could not be read stopped the
    /// flush, so every bucket stalled behind it. It is logged and that bucket skipped.
    #[test]
    fn an_unreadable_parked_queue_holds_up_only_its_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = secret_refused_on_disk(dir.path(), 4);
        three_buckets(&mut ro, 0..3);
        assert_eq!(ro.flush(), Ok(2));
        ro.close();
        let (mut ro, seen) = routed(|_| ("204 No Content", ""), 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        for (p, _) in files(&dir.path().join(PARKED_DIR)) {
            if p.extension().is_some_and(|x| x == "seg") {
                std::fs::remove_file(p).unwrap();
            }
        }
        three_buckets(&mut ro, 3..6);
        assert_eq!(ro.flush(), Ok(3), "the new metrics are written");
        assert_eq!(buckets(&seen), ["a", "secret", "b"]);
        assert_eq!(ro.buffered(), 1, "the unreadable one is still counted");
    }

    /// Regression (review of 0c78aa3): at a restart one parked queue that could not be
    /// opened (damaged, or out of file descriptors) failed the whole disk buffer, so the
    /// output fell back to memory and its main queue was not replayed. It is skipped.
    #[test]
    fn a_parked_queue_that_cannot_be_opened_does_not_fail_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = secret_refused_on_disk(dir.path(), 4);
        three_buckets(&mut ro, 0..3);
        assert_eq!(ro.flush(), Ok(2));
        three_buckets(&mut ro, 3..6);
        ro.close();
        let ack = parked_dir(dir.path(), "secret").join("ack");
        std::fs::remove_file(&ack).unwrap();
        std::fs::create_dir(&ack).unwrap();
        let (mut ro, _) = routed(|_| ("204 No Content", ""), 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        let restored = ro.open_disk_buffer().unwrap().map(|r| r.restored);
        assert_eq!(restored, Some(3), "the main queue");
        assert!(ro.has_disk_buffer());
        assert_eq!(ro.flush(), Ok(3));
    }

    /// Regression (review of 4453d46): a queue left on disk at start (it could not be opened)
    /// is reopened when its bucket is refused again; a failed first write into it removed the
    /// whole directory, its earlier metrics with it.
    #[test]
    fn a_failed_set_aside_into_a_queue_left_at_start_keeps_its_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let refuse = |line: &str| match line.contains("bucket=secret") {
            true => ("403 Forbidden", "no"),
            false => ("204 No Content", ""),
        };
        let (mut ro, _) = routed(refuse, 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        three_buckets(&mut ro, 0..3);
        assert_eq!(ro.flush(), Ok(2));
        ro.close();
        let queue = parked_dir(dir.path(), "secret");
        let ack = queue.join("ack");
        let bytes = std::fs::read(&ack).unwrap();
        std::fs::remove_file(&ack).unwrap();
        std::fs::create_dir(&ack).unwrap();
        let (mut ro, _) = routed(refuse, 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        std::fs::remove_dir(&ack).unwrap();
        std::fs::write(&ack, bytes).unwrap();
        let before = files(&queue);
        three_buckets(&mut ro, 3..6);
        super::super::disk_buffer::FAIL_DURABLE.set(true);
        let _ = ro.flush();
        super::super::disk_buffer::FAIL_DURABLE.set(false);
        let after = files(&queue);
        let segments = |all: &[(std::path::PathBuf, Vec<u8>)]| {
            all.iter()
                .filter(|(p, b)| p.extension().is_some_and(|e| e == "seg") && !b.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(!segments(&before).is_empty());
        assert_eq!(
            segments(&after),
            segments(&before),
            "the earlier metrics are kept"
        );
    }

    /// Every file under `dir` with its bytes, sorted by path.
    pub(super) fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut all = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return all;
        };
        for e in entries {
            let p = e.unwrap().path();
            match p.is_dir() {
                true => all.extend(files(&p)),
                false => all.push((p.clone(), std::fs::read(&p).unwrap())),
            }
        }
        all.sort();
        all
    }

    /// Regression (review of 8d62f7a): a walk of the parked metrics cut short by an outage
    /// (InfluxDB answering 500) moved every parked metric it had not reached to the back of
    /// the queue, so each retry rewrote the whole parked queue (~200 MB every 15 s at a
    /// million). What a walk does not settle stays where it was: not a byte is written.
    #[test]
    fn a_parked_walk_cut_short_by_an_outage_leaves_the_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = secret_refused_on_disk(dir.path(), 1);
        three_buckets(&mut ro, 0..9);
        assert_eq!(ro.flush(), Ok(6));
        ro.close();
        // After a restart `secret` is due at once, and the server is down.
        let (mut ro, seen) = routed(|_| ("500 Internal Server Error", "down"), 1);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        let before = files(dir.path());
        for _ in 0..3 {
            assert!(matches!(ro.flush(), Err(WriteError::Retry(_))));
        }
        assert_eq!(buckets(&seen), ["secret"; 3], "one request a flush");
        assert_eq!(files(dir.path()), before, "not a byte written");
        assert_eq!(ro.buffered(), 3);
    }

    /// Regression (review of 8d62f7a): a refused bucket falling due read and rewrote every
    /// bucket's parked metrics. Each bucket has its own queue: `secret`'s turn writes and
    /// removes its own, `hidden`, refused again, keeps its files as they were.
    #[test]
    fn a_bucket_s_turn_leaves_the_other_buckets_parked_metrics_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = routed(
            |line| match line.contains("bucket=a") {
                true => ("204 No Content", ""),
                false => ("403 Forbidden", "no"),
            },
            2,
        );
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        for t in 0..9 {
            let bucket = ["a", "secret", "hidden"][t as usize % 3];
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", bucket),
            );
        }
        assert_eq!(ro.flush(), Ok(3));
        ro.close();
        let (mut ro, seen) = routed(
            |line| match line.contains("bucket=hidden") {
                true => ("403 Forbidden", "no"),
                false => ("204 No Content", ""),
            },
            2,
        );
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        let hidden = parked_dir(dir.path(), "hidden");
        let before = files(&hidden);
        assert!(before.len() >= 2, "an ack and segments: {before:?}");
        assert_eq!(ro.flush(), Ok(3));
        let mut asked = buckets(&seen);
        asked.sort();
        assert_eq!(asked, ["hidden", "secret", "secret"]);
        assert_eq!(files(&hidden), before, "`hidden` untouched");
        assert!(!parked_dir(dir.path(), "secret").exists());
        assert_eq!(ro.buffered(), 3);
    }

    /// Regression (review of 8d62f7a): a refused bucket whose parked metrics were all
    /// dropped by the limit stayed refused, due for ever once its backoff passed, so every
    /// flush walked (and rewrote) the parked metrics. It is forgotten once none of its
    /// metrics waits: a new one is asked at once, and a refusal then counts on (no new
    /// warning).
    #[test]
    fn a_refused_bucket_is_forgotten_once_its_metrics_are_gone() {
        let (mut ro, seen) = routed(refuse_secret, 4);
        ro.buffer_limit = 4;
        three_buckets(&mut ro, 0..3);
        assert_eq!(ro.flush(), Ok(2));
        assert_eq!(buckets(&seen), ["a", "secret", "b"]);
        for t in 3..7 {
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", "a"),
            );
        }
        assert_eq!((ro.parked_len(), ro.stats.metrics_dropped), (0, 1));
        ro.add(
            &Metric::new("m", 7)
                .with_field("v", 7i64)
                .with_tag("bucket", "secret"),
        );
        assert_eq!(ro.flush(), Ok(3), "the oldest `a` went with the limit");
        assert_eq!(buckets(&seen), ["a", "secret"], "`secret` asked at once");
        let counts = ro
            .hand_over()
            .and_then(|s| {
                s.downcast::<crate::outputs::influxdb_v2::RefusedBuckets>()
                    .ok()
            })
            .and_then(|c| c.0.get("secret").copied());
        assert_eq!(counts, Some(2), "the refusals count on");
    }

    /// Metrics at times `0..n`, to buckets `a`, `secret`, `b` in turn.
    fn three_buckets(ro: &mut RunningOutput, times: std::ops::Range<i64>) {
        for t in times {
            let bucket = ["a", "secret", "b"][t as usize % 3];
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", bucket),
            );
        }
    }

    /// The buckets of the write requests the server saw, and forgets them.
    fn buckets(seen: &Mutex<Vec<String>>) -> Vec<String> {
        let mut seen = seen.lock().expect("lock");
        let out = seen
            .iter()
            .filter_map(|l| {
                let q = l.split_once("bucket=")?.1;
                Some(q.split(['&', ' ']).next()?.to_owned())
            })
            .collect();
        seen.clear();
        out
    }

    /// Regression: with `bucket_tag`, one bucket the token may not write (403) kept the whole
    /// batch and stopped the flush, so every other bucket stalled behind it until the buffer
    /// overflowed. Its metrics are kept (set aside), the others written; the
    /// flush is not a failure (no backoff, no error), and the refused bucket is not asked
    /// again before its own backoff.
    #[test]
    fn a_refused_bucket_does_not_stall_the_others() {
        let (mut ro, seen) = routed(
            |line| match line.contains("bucket=secret") {
                true => ("403 Forbidden", r#"{"code":"forbidden","message":"no"}"#),
                false => ("204 No Content", ""),
            },
            4,
        );
        three_buckets(&mut ro, 0..9);
        // Batches [0 1 2 3] and [4 5 6 7] and [8]: `secret` asked once, then in its backoff.
        assert_eq!(ro.flush(), Ok(6));
        assert_eq!(buckets(&seen), ["a", "secret", "b", "b", "a", "b"]);
        assert_eq!((ro.buffered(), ro.stats.metrics_written), (3, 6));
        assert_eq!(ro.retry_in(), None, "others were written: no backoff");
        assert_eq!(ro.stats.write_errors, 0);
        // The kept metrics are not a full batch: new ones still start a batch-full write.
        assert!(!ro.batch_ready());
        three_buckets(&mut ro, 9..12);
        assert!(!ro.batch_ready());
        three_buckets(&mut ro, 12..13);
        assert!(ro.batch_ready());
        assert_eq!(ro.flush(), Ok(3));
        assert_eq!(buckets(&seen), ["a", "b"], "`secret` is in its backoff");
        assert_eq!(ro.buffered(), 4, "the 4 metrics of `secret` wait");
    }

    /// With a disk buffer, a restart (after a stop, not a power cut: see the module doc)
    /// finds exactly the refused bucket's metrics: the written ones are not sent again, the
    /// kept ones not lost.
    #[test]
    fn a_restart_finds_only_the_kept_metrics_in_the_disk_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, _) = secret_refused_on_disk(dir.path(), 4);
        three_buckets(&mut ro, 0..9);
        assert_eq!(ro.flush(), Ok(6));
        ro.close();
        let (mut ro, seen) = routed(|_| ("204 No Content", ""), 100);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        let restored = ro.open_disk_buffer().unwrap().map(|r| r.restored);
        assert_eq!(restored, Some(3));
        assert_eq!(ro.flush(), Ok(3));
        assert_eq!(buckets(&seen), ["secret"]);
    }

    /// A server-wide failure (500) with `bucket_tag`: one request, the whole batch kept, and
    /// the output backs off; not one request per bucket at every flush.
    #[test]
    fn a_server_failure_is_not_retried_bucket_by_bucket() {
        let (mut ro, seen) = routed(|_| ("500 Internal Server Error", "down"), 4);
        three_buckets(&mut ro, 0..9);
        assert!(matches!(ro.flush(), Err(WriteError::Retry(_))));
        assert_eq!(buckets(&seen).len(), 1);
        assert_eq!(ro.buffered(), 9);
        assert!(ro.retry_in().is_some());
    }

    /// Regression (review of 1d28d1f): a reload forgot the refused buckets, so the new output
    /// warned about each again at once and restarted its backoff at 10 s. It asks at once
    /// (the reload may bring a new token) but the refusal counts on, without a warning (the
    /// warning is logged only at the first refusal).
    #[test]
    fn a_reload_remembers_the_refused_buckets() {
        let refuse_secret = |line: &str| match line.contains("bucket=secret") {
            true => ("403 Forbidden", "no"),
            false => ("204 No Content", ""),
        };
        let (mut old, _) = routed(refuse_secret, 4);
        three_buckets(&mut old, 0..3);
        assert_eq!(old.flush(), Ok(2));
        let (unsent, state) = (old.take_unsent(), old.hand_over());
        old.close();
        let (mut new, seen) = routed(refuse_secret, 4);
        new.take_over(state.expect("the refused bucket is handed over"));
        new.restore_unsent(unsent);
        assert!(new.flush().is_err(), "refused, nothing written");
        assert_eq!(buckets(&seen), ["secret"], "asked again at once");
        let counts = new
            .hand_over()
            .and_then(|s| {
                s.downcast::<crate::outputs::influxdb_v2::RefusedBuckets>()
                    .ok()
            })
            .and_then(|c| c.0.get("secret").copied());
        assert_eq!(
            counts,
            Some(2),
            "the second refusal in a row: no new warning"
        );
    }

    /// Regression (review of 1d28d1f): with `bucket_tag`, a 413 split whose first half was
    /// stored and whose second half failed with a 5xx kept the whole batch, so the stored
    /// half was sent again. The settled prefix leaves the buffer, as without `bucket_tag`.
    #[test]
    fn a_split_then_a_server_failure_keeps_only_the_unsent_half() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static ASKED: AtomicUsize = AtomicUsize::new(0);
        let (mut ro, seen) = routed(
            |_| match ASKED.fetch_add(1, Ordering::SeqCst) {
                0 => ("413 Payload Too Large", ""),
                1 => ("204 No Content", ""),
                _ => ("500 Internal Server Error", "down"),
            },
            4,
        );
        for t in 0..4 {
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", "a"),
            );
        }
        assert!(matches!(
            ro.flush(),
            Err(WriteError::Partial { done: 2, .. })
        ));
        assert_eq!(buckets(&seen), ["a", "a", "a"]);
        assert_eq!((ro.buffered(), ro.stats.metrics_written), (2, 2));
        assert!(ro.retry_in().is_some());
    }

    /// A token refused by every bucket: each bucket is asked once, then not before its
    /// backoff, and the output backs off too (nothing could be written).
    ///
    /// Regression (review of 1d28d1f): a later flush that finds only metrics of buckets in
    /// their backoff sends nothing, and was still an error (logged, counted, backed off,
    /// which also blocked batch-full writes). Only a refusal received counts.
    #[test]
    fn a_token_refused_everywhere_costs_one_request_per_bucket() {
        let (mut ro, seen) = routed(|_| ("401 Unauthorized", "bad token"), 2);
        three_buckets(&mut ro, 0..9);
        assert!(matches!(ro.flush(), Err(WriteError::Retry(_))));
        assert_eq!(buckets(&seen), ["a", "secret", "b"]);
        assert_eq!(ro.buffered(), 9);
        assert!(ro.retry_in().is_some());
        assert_eq!(ro.stats.write_errors, 1);
        three_buckets(&mut ro, 9..11);
        assert_eq!(ro.flush(), Ok(0), "nothing refused in this flush: no error");
        assert!(buckets(&seen).is_empty(), "every bucket is in its backoff");
        assert_eq!(ro.buffered(), 11);
        assert_eq!((ro.stats.write_errors, ro.retry_in()), (1, None));
    }

    /// Regression (review of 1d28d1f): every flush read, re-encoded, appended and fsynced
    /// every kept metric, even for buckets in their backoff (about 200 MB a flush at a limit
    /// of a million). They wait aside, untouched, until a refused bucket is due.
    #[test]
    fn a_flush_with_every_refused_bucket_in_its_backoff_leaves_the_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ro, seen) = routed(|_| ("403 Forbidden", "no"), 4);
        ro.set_disk_buffer(dir.path().to_owned(), false);
        ro.open_disk_buffer().unwrap();
        three_buckets(&mut ro, 0..9);
        assert!(ro.flush().is_err());
        assert_eq!(buckets(&seen).len(), 3);
        let before = files(dir.path());
        for _ in 0..3 {
            assert_eq!(ro.flush(), Ok(0));
        }
        assert_eq!(files(dir.path()), before, "not a byte written");
        assert!(buckets(&seen).is_empty());
        assert_eq!(ro.buffered(), 9);
    }

    /// Regression (review of 1d28d1f): the count of kept metrics, kept beside the buffer,
    /// went stale when the limit dropped some, so a full batch of new metrics was not seen
    /// as one. Kept metrics share the limit, go first, and are counted exactly.
    #[test]
    fn kept_metrics_share_the_limit_and_go_first() {
        let (mut ro, _) = routed(refuse_secret, 4);
        ro.buffer_limit = 6;
        three_buckets(&mut ro, 0..6);
        assert_eq!(ro.flush(), Ok(4));
        assert_eq!(ro.buffered(), 2, "two of `secret` kept");
        ro.batch_size = 6;
        for t in 6..12 {
            ro.add(
                &Metric::new("m", t)
                    .with_field("v", t)
                    .with_tag("bucket", "a"),
            );
        }
        assert_eq!((ro.buffered(), ro.stats.metrics_dropped), (6, 2));
        assert_eq!(ro.parked_len(), 0, "the kept ones, oldest, went first");
        assert!(ro.batch_ready(), "6 new metrics are a full batch");
        ro.add(
            &Metric::new("m", 12)
                .with_field("v", 12i64)
                .with_tag("bucket", "a"),
        );
        assert_eq!((ro.buffered(), ro.stats.metrics_dropped), (6, 3));
    }
}
