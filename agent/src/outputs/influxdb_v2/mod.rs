//! `[[outputs.influxdb_v2]]`: line protocol to `/api/v2/write?bucket=&org=` (InfluxDB 2.x,
//! Cloud, 3.x, VictoriaMetrics; spec/telegraf.md §5.2).
//!
//! Answers, as Telegraf: 2xx stored; 413 splits the batch in half and sends each half
//! (recursively; a single metric still too large stays buffered); 401/403 keep the batch
//! (a token problem is fixed by the operator, not by dropping data); 429/502/503/504 keep
//! it and honour `Retry-After` (up to 10 min); other 4xx reject the (sub)batch for good;
//! other statuses and transport errors keep it. The shared HTTP code lives in
//! `common::http`.
//!
//! With `bucket_tag`, a bucket the token may not write (every URL that answered said 401 or
//! 403) does not stall the others: its metrics are kept ([`WriteError::Kept`]: the buffer
//! sets them aside) while the other buckets of the batch are written, and the bucket is not
//! asked again before its own backoff (10 s, doubling up to 5 min) has passed, so a token
//! refused everywhere costs one request per bucket per backoff, not one per batch; the
//! metrics set aside wait in a queue per bucket ([`Output::kept_key`]), not read before
//! then ([`Output::kept_due_at`]). A reload asks the
//! refused buckets again at once (it may bring a new token) but remembers them: a refusal
//! then goes on with the backoff it had reached, without a new warning; so does a bucket
//! none of whose metrics waits any more (dropped by the limit: [`Output::forget_kept`]), and
//! one let go when more than [`MAX_REFUSED`] are in their backoff.
//! Any other failure (5xx, transport, "slow down") is the server's, not the bucket's: the
//! write stops there and keeps the batch from its first metric not yet settled (what a 413
//! split stored is not sent again, as without `bucket_tag`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::{Output, OutputSpec, WriteError};
use crate::common::http::{self, Client, Secret, join_url, short, shuffled};
use crate::lineproto::Serializer;
use crate::metric::Metric;
use crate::plugin::BuildContext;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: OutputSpec = OutputSpec {
    name: "influxdb_v2",
    description: "Write metrics to the InfluxDB v2 HTTP API (/api/v2/write)",
    sample_config: include_str!("sample.conf"),
    build,
};

struct InfluxDbV2 {
    client: Client,
    token: Secret,
    organization: String,
    bucket: String,
    bucket_tag: Option<String>,
    exclude_bucket_tag: bool,
    serializer: Serializer,
    /// Buckets that answered 401/403 (with `bucket_tag`): consecutive refusals, and no new
    /// attempt before the instant (at most [`MAX_REFUSED`], see [`InfluxDbV2::refuse`]).
    refused: HashMap<String, (u32, Instant)>,
    /// Buckets the output this one replaced (a reload) saw refused, and how often: asked at
    /// once (the reload may bring a new token), but a refusal goes on counting and is not
    /// warned about again; with the order they were remembered in (at most
    /// [`MAX_WAS_REFUSED`], the oldest forgotten first).
    was_refused: HashMap<String, (u32, u64)>,
    /// The order number of the last bucket remembered in `was_refused`.
    remembered: u64,
}

/// What a reload hands over: the refused buckets and their consecutive refusals.
pub(crate) struct RefusedBuckets(pub(crate) HashMap<String, u32>);

/// Most buckets `was_refused` remembers: bucket names come from tags, and one never seen
/// again would otherwise stay for ever (reloads hand them on).
const MAX_WAS_REFUSED: usize = 1024;

/// Most buckets `refused` holds: bucket names come from tags, and an entry otherwise goes
/// only when its bucket accepts a write or none of its metrics waits.
const MAX_REFUSED: usize = 1024;

/// First wait before a refused bucket is asked again; it doubles up to [`REFUSED_MAX`].
const REFUSED_MIN: Duration = Duration::from_secs(10);
const REFUSED_MAX: Duration = Duration::from_secs(300);

/// The wait after `n` consecutive refusals of a bucket.
fn refused_backoff(n: u32) -> Duration {
    REFUSED_MIN
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(REFUSED_MAX)
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Output> {
    Box::new(configure(opts))
}

fn configure(opts: &mut Options<'_, '_>) -> InfluxDbV2 {
    let settings = http::read_http_options(opts, "http://localhost:8086", false);
    let token = Secret::read(opts, "token", "token_file");
    let organization = opts.string("organization", "");
    let bucket = opts.string("bucket", "");
    let bucket_tag = opts.opt_string("bucket_tag").filter(|s| !s.is_empty());
    let exclude_bucket_tag = opts.bool("exclude_bucket_tag", false);
    if bucket.is_empty() && bucket_tag.is_none() {
        // Telegraf's sample has `bucket = ""`, so this loads; the server will refuse the writes.
        opts.warn_at(
            "bucket",
            "is empty (and no bucket_tag): the server will refuse the writes",
        );
    }
    opts.unsupported(&[
        "ping_timeout",
        "read_idle_timeout",
        "rate_limit",
        "rate_limit_period",
        "concurrent_writes",
    ]);
    let serializer = Serializer {
        uint_support: opts.bool("influx_uint_support", false),
        omit_timestamp: opts.bool("influx_omit_timestamp", false),
        sort_fields: false,
    };
    InfluxDbV2 {
        client: Client::new(settings),
        token,
        organization,
        bucket,
        bucket_tag,
        exclude_bucket_tag,
        serializer,
        refused: HashMap::new(),
        was_refused: HashMap::new(),
        remembered: 0,
    }
}

/// What an answer of `/api/v2/write` means for the (sub)batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Stored,
    TooLarge,
    Rejected(String),
    /// Kept; `Some(wait)` when the server asked us to slow down.
    Retry(String, Option<std::time::Duration>),
}

/// Classifies an answer (pure, tested on literal answers).
pub fn classify(
    status: u16,
    body: &str,
    retry_after: Option<std::time::Duration>,
    influx_error: Option<&str>,
) -> Verdict {
    let mut msg = format!("HTTP {status}");
    let text = body.trim();
    if !text.is_empty() {
        msg.push_str(": ");
        msg.push_str(&short(text));
    }
    if let Some(e) = influx_error.filter(|e| !e.is_empty()) {
        msg.push_str(" (X-Influx-Error: ");
        msg.push_str(&short(e));
        msg.push(')');
    }
    match status {
        200..=299 => Verdict::Stored,
        413 => Verdict::TooLarge,
        401 | 403 => Verdict::Retry(msg, None),
        429 | 502 | 503 | 504 => {
            Verdict::Retry(msg, Some(retry_after.unwrap_or(std::time::Duration::ZERO)))
        }
        400..=499 => Verdict::Rejected(msg),
        _ => Verdict::Retry(msg, None),
    }
}

/// The settled prefix of a (sub)batch and why the rest is not.
#[derive(Debug, Default)]
struct Progress {
    done: usize,
    rejected: usize,
    reasons: Vec<String>,
    error: Option<(String, Option<std::time::Duration>)>,
    /// The error is a refusal of this bucket: every URL that answered said 401 or 403.
    refused: bool,
}

impl InfluxDbV2 {
    /// Remembers `n` refusals of `bucket` in `was_refused`, forgetting the oldest bucket
    /// remembered when there are more than [`MAX_WAS_REFUSED`].
    fn remember_refused(&mut self, bucket: String, n: u32) {
        self.remembered += 1;
        self.was_refused.insert(bucket, (n, self.remembered));
        if self.was_refused.len() > MAX_WAS_REFUSED {
            let oldest = self.was_refused.iter().min_by_key(|e| e.1.1);
            if let Some(b) = oldest.map(|e| e.0.clone()) {
                self.was_refused.remove(&b);
            }
        }
    }

    /// Records `n` consecutive refusals of `bucket`, not asked again before `until`. Beyond
    /// [`MAX_REFUSED`] buckets, another one, the first due (an expired one first), goes to
    /// `was_refused`: asked at once next time, its refusals counting on.
    fn refuse(&mut self, bucket: &str, n: u32, until: Instant) {
        self.refused.insert(bucket.to_owned(), (n, until));
        if self.refused.len() > MAX_REFUSED {
            let others = self.refused.iter().filter(|e| e.0 != bucket);
            let first = others.min_by_key(|e| e.1.1).map(|e| e.0.clone());
            if let Some((b, (n, _))) = first.and_then(|b| self.refused.remove_entry(&b)) {
                self.remember_refused(b, n);
            }
        }
    }

    /// The bucket `m` is written to: its `bucket_tag`, else `bucket`.
    fn bucket_of<'a>(&'a self, m: &'a Metric) -> &'a str {
        self.bucket_tag
            .as_deref()
            .and_then(|t| m.tag(t))
            .unwrap_or(&self.bucket)
    }

    fn headers(&self) -> Result<Vec<(&'static str, String)>, http::HttpError> {
        let token = self.token.get()?;
        if token.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![("Authorization", format!("Token {token}"))])
    }

    /// Serializes `metrics`; returns the body and how many wrote nothing.
    fn body(&self, metrics: &[&Metric]) -> (Vec<u8>, usize) {
        let mut body = Vec::with_capacity(metrics.len() * 128);
        let mut unwritable = 0;
        let strip = self
            .exclude_bucket_tag
            .then_some(self.bucket_tag.as_deref())
            .flatten();
        for m in metrics {
            let wrote = match strip {
                Some(t) if m.tag(t).is_some() => {
                    let mut m = (*m).clone();
                    m.retain_tags(|k| k != t);
                    self.serializer.write(&mut body, &m)
                }
                _ => self.serializer.write(&mut body, m),
            };
            if !wrote {
                unwritable += 1;
            }
        }
        (body, unwritable)
    }

    /// Sends `metrics` to `bucket`, splitting on 413; the result says how many of them, from
    /// the front, are settled.
    fn send(&mut self, bucket: &str, metrics: &[&Metric], headers: &[(&str, String)]) -> Progress {
        let (body, unwritable) = self.body(metrics);
        let mut p = Progress::default();
        if unwritable == metrics.len() {
            p.done = metrics.len();
            p.rejected = unwritable;
            p.reasons
                .push(format!("{unwritable} metric(s) without a writable field"));
            return p;
        }
        let mut errors = Vec::new();
        let mut wait = None;
        let (mut refusals, mut other_answers) = (0, 0);
        for i in shuffled(self.client.settings.urls.len()) {
            let url = join_url(
                &self.client.settings.urls[i],
                "api/v2/write",
                &[("bucket", bucket), ("org", &self.organization)],
            );
            let shown = crate::common::http::redact_url(&url);
            let reply =
                match self
                    .client
                    .post(&url, "text/plain; charset=utf-8", &body, headers, true)
                {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
            match classify(
                reply.status,
                &reply.body,
                reply.retry_after,
                reply.influx_error.as_deref(),
            ) {
                Verdict::Stored => {
                    p.done = metrics.len();
                    p.rejected = unwritable;
                    if unwritable > 0 {
                        p.reasons
                            .push(format!("{unwritable} metric(s) without a writable field"));
                    }
                    return p;
                }
                Verdict::Rejected(msg) => {
                    p.done = metrics.len();
                    p.rejected = metrics.len();
                    p.reasons.push(format!("{shown}: {msg}"));
                    return p;
                }
                Verdict::TooLarge if metrics.len() > 1 => {
                    let half = metrics.len() / 2;
                    debug!(url = %shown, metrics = metrics.len(), "HTTP 413: splitting the batch in two");
                    let first = self.send(bucket, &metrics[..half], headers);
                    if first.error.is_some() {
                        return first;
                    }
                    let second = self.send(bucket, &metrics[half..], headers);
                    return Progress {
                        done: first.done + second.done,
                        rejected: first.rejected + second.rejected,
                        reasons: first.reasons.into_iter().chain(second.reasons).collect(),
                        error: second.error,
                        refused: second.refused,
                    };
                }
                Verdict::TooLarge => {
                    other_answers += 1;
                    errors.push(format!(
                        "{shown}: HTTP 413: a single metric is larger than the server accepts"
                    ));
                }
                Verdict::Retry(msg, w) => {
                    if w.is_some() {
                        wait = wait.max(w);
                    }
                    if matches!(reply.status, 401 | 403) {
                        refusals += 1;
                    } else {
                        other_answers += 1;
                    }
                    errors.push(format!("{shown}: {msg}"));
                }
            }
        }
        p.refused = refusals > 0 && other_answers == 0;
        p.error = Some((
            format!("could not write any address: {}", errors.join("; ")),
            wait,
        ));
        p
    }
}

impl InfluxDbV2 {
    /// [`Output::write`] with `bucket_tag`: each bucket settled on its own. A bucket that
    /// refuses (401/403) keeps only its metrics and waits for its backoff; any other failure
    /// stops the write and keeps the batch from its first metric not settled (the server, not
    /// the bucket, is in trouble: asking it once per bucket would multiply the requests).
    fn write_per_bucket(
        &mut self,
        metrics: &[Metric],
        groups: &[(String, Vec<usize>)],
        headers: &[(&str, String)],
    ) -> Result<(), WriteError> {
        let mut kept = Vec::new();
        let mut rejected = 0;
        let mut reasons = Vec::new();
        let mut refusals = Vec::new();
        let mut refused_now = false;
        // Per bucket tried: the indices it settled and how many of them were rejected.
        let mut settled: Vec<(&[usize], usize)> = Vec::new();
        for (bucket, indices) in groups {
            let now = Instant::now();
            if let Some((_, until)) = self.refused.get(bucket.as_str())
                && *until > now
            {
                kept.extend_from_slice(indices);
                refusals.push(format!(
                    "bucket {bucket:?} refused, asked again in {:?}",
                    until.duration_since(now)
                ));
                continue;
            }
            let ms: Vec<&Metric> = indices.iter().map(|&i| &metrics[i]).collect();
            let p = self.send(bucket, &ms, headers);
            rejected += p.rejected;
            reasons.extend(p.reasons);
            match p.error {
                None => {
                    settled.push((indices, p.rejected));
                    let was = self.was_refused.remove(bucket.as_str()).is_some();
                    if self.refused.remove(bucket.as_str()).is_some() || was {
                        info!("bucket {bucket:?} accepts writes again");
                    }
                }
                Some((msg, _)) if p.refused => {
                    let n = match self.refused.get(bucket.as_str()) {
                        Some(r) => r.0,
                        None => self.was_refused.remove(bucket.as_str()).map_or(0, |r| r.0),
                    } + 1;
                    let wait = refused_backoff(n);
                    if n == 1 {
                        warn!(
                            "bucket {bucket:?} refused: {msg}; its metrics are kept and it is asked again with backoff (first in {wait:?}); the other buckets are written"
                        );
                    } else {
                        debug!("bucket {bucket:?} refused again ({n} times): {msg}");
                    }
                    self.refuse(bucket, n, Instant::now() + wait);
                    let done = p.done.min(indices.len());
                    settled.push((&indices[..done], p.rejected));
                    kept.extend_from_slice(&indices[done..]);
                    refused_now = true;
                    refusals.push(format!("bucket {bucket:?}: {msg}"));
                }
                Some((msg, wait)) => {
                    // What this bucket stored before the failure (the first half after a
                    // 413) is settled too: the batch's settled prefix is not sent again.
                    settled.push((&indices[..p.done.min(indices.len())], p.rejected));
                    let reason = format!("bucket {bucket:?}: {msg}");
                    return Err(settled_prefix(metrics.len(), &settled, reason, wait));
                }
            }
        }
        let reason = reasons.join("; ");
        if !kept.is_empty() {
            kept.sort_unstable();
            let mut why = refusals.join("; ");
            if !reason.is_empty() {
                why = format!("{why}; rejected: {reason}");
            }
            return Err(WriteError::Kept {
                kept,
                rejected,
                reason: why,
                refused: refused_now,
            });
        }
        match rejected {
            0 => Ok(()),
            _ => Err(WriteError::Rejected { rejected, reason }),
        }
    }
}

/// The error for a per-bucket write stopped by a failure other than a refusal: the longest
/// prefix of the batch that `settled` covers is settled ([`WriteError::Partial`], as without
/// `bucket_tag`), the rest stays at the head of the buffer. A settled metric behind the first
/// unsettled one is sent again (the server overwrites the same points).
fn settled_prefix(
    n: usize,
    settled: &[(&[usize], usize)],
    reason: String,
    wait: Option<Duration>,
) -> WriteError {
    let mut done = vec![false; n];
    for &i in settled.iter().flat_map(|s| s.0) {
        if let Some(d) = done.get_mut(i) {
            *d = true;
        }
    }
    let done = done.iter().take_while(|d| **d).count();
    // Rejections are counted per bucket: those of the buckets wholly inside the prefix.
    let rejected = settled
        .iter()
        .filter(|s| s.0.iter().all(|&i| i < done))
        .map(|s| s.1)
        .sum::<usize>()
        .min(done);
    match (done, wait) {
        (0, Some(after)) => WriteError::RetryAfter { after, reason },
        (0, None) => WriteError::Retry(reason),
        (done, retry_after) => WriteError::Partial {
            done,
            rejected,
            reason,
            retry_after,
        },
    }
}

impl Output for InfluxDbV2 {
    fn kept_key(&self, metric: &Metric) -> String {
        self.bucket_of(metric).to_owned()
    }

    fn kept_due_at(&self, bucket: &str) -> Option<Instant> {
        self.refused.get(bucket).map(|(_, until)| *until)
    }

    fn forget_kept(&mut self, bucket: &str) {
        // As at a reload: asked at once next time, a refusal then counts on, unwarned.
        if let Some((n, _)) = self.refused.remove(bucket) {
            self.remember_refused(bucket.to_owned(), n);
        }
    }

    fn hand_over(&mut self) -> Option<super::HandOver> {
        let mut counts: HashMap<String, u32> = std::mem::take(&mut self.was_refused)
            .into_iter()
            .map(|(b, (n, _))| (b, n))
            .collect();
        counts.extend(self.refused.drain().map(|(b, (n, _))| (b, n)));
        (!counts.is_empty()).then(|| Box::new(RefusedBuckets(counts)) as super::HandOver)
    }

    fn take_over(&mut self, state: super::HandOver) {
        if let Ok(r) = state.downcast::<RefusedBuckets>() {
            for (b, n) in r.0 {
                self.remember_refused(b, n);
            }
        }
    }

    fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError> {
        let headers = self.headers()?;
        // Group by bucket, in order of first appearance, each metric by its batch index.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, m) in metrics.iter().enumerate() {
            let b = self.bucket_of(m);
            match groups.iter_mut().find(|g| g.0 == b) {
                Some(g) => g.1.push(i),
                None => groups.push((b.to_owned(), vec![i])),
            }
        }
        if self.bucket_tag.is_some() {
            return self.write_per_bucket(metrics, &groups, &headers);
        }
        let single = groups.len() == 1;
        let mut total = Progress::default();
        for (bucket, indices) in &groups {
            let ms: Vec<&Metric> = indices.iter().map(|&i| &metrics[i]).collect();
            let p = self.send(bucket, &ms, &headers);
            total.done += p.done;
            total.rejected += p.rejected;
            total.reasons.extend(p.reasons);
            if p.error.is_some() {
                total.error = p.error;
                break;
            }
        }
        let reason = total.reasons.join("; ");
        match total.error {
            None if total.rejected == 0 => Ok(()),
            None => Err(WriteError::Rejected {
                rejected: total.rejected,
                reason,
            }),
            Some((msg, wait)) if total.done == 0 || !single => match wait {
                // Several buckets: a settled group is not a prefix of the batch, so the whole
                // batch is kept (a stored group is overwritten with the same points on retry).
                Some(after) => Err(WriteError::RetryAfter { after, reason: msg }),
                None => Err(WriteError::Retry(msg)),
            },
            Some((msg, wait)) => Err(WriteError::Partial {
                done: total.done,
                rejected: total.rejected,
                reason: if reason.is_empty() {
                    msg
                } else {
                    format!("{msg}; rejected: {reason}")
                },
                retry_after: wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Regression (review of 0c78aa3): the buckets remembered as refused (bucket names come
    /// from tags) were never forgotten, and each reload handed them all on. At most
    /// [`MAX_WAS_REFUSED`] are kept.
    #[test]
    fn the_refused_buckets_remembered_are_capped() {
        let paths = crate::hostpaths::HostPaths::default();
        let stats = Default::default();
        let ctx = crate::plugin::BuildContext {
            paths: &paths,
            interval: Duration::from_secs(10),
            stats: &stats,
        };
        let (mut out, _) =
            wk_core::testing::read_table("[influxdb_v2]\n  bucket_tag = \"b\"\n", |o| {
                build(o, &ctx)
            });
        let many = (0..MAX_WAS_REFUSED + 10).map(|i| (format!("b{i}"), 1));
        out.take_over(Box::new(RefusedBuckets(many.collect())));
        let kept = out
            .hand_over()
            .and_then(|s| s.downcast::<RefusedBuckets>().ok())
            .map(|r| r.0.len());
        assert_eq!(kept, Some(MAX_WAS_REFUSED));
    }

    /// Regression (review of bbbd866): the buckets refused (bucket names come from tags)
    /// left `refused` only when they accepted a write or none of their metrics waited, so
    /// it grew without bound. At most [`MAX_REFUSED`]; the first due goes first.
    #[test]
    fn the_refused_buckets_are_capped() {
        let (mut out, _) =
            wk_core::testing::read_table("[influxdb_v2]\n  bucket_tag = \"b\"\n", configure);
        let now = Instant::now();
        out.refuse("expired", 3, now - Duration::from_secs(1));
        for i in 0..MAX_REFUSED + 10 {
            out.refuse(&format!("b{i}"), 1, now + Duration::from_secs(3600));
        }
        assert_eq!(out.refused.len(), MAX_REFUSED);
        assert!(
            !out.refused.contains_key("expired"),
            "the first due went first"
        );
        assert_eq!(out.was_refused.get("expired").map(|r| r.0), Some(3));
    }

    #[test]
    fn answers_are_classified_as_telegraf_does() {
        for s in [200, 201, 202, 204, 206, 207, 208] {
            assert_eq!(classify(s, "", None, None), Verdict::Stored, "{s}");
        }
        assert_eq!(classify(413, "", None, None), Verdict::TooLarge);
        assert!(matches!(
            classify(400, "bad", None, None),
            Verdict::Rejected(_)
        ));
        assert!(matches!(
            classify(422, "", None, None),
            Verdict::Rejected(_)
        ));
        assert!(matches!(
            classify(404, "", None, None),
            Verdict::Rejected(_)
        ));
        assert!(matches!(
            classify(401, "", None, None),
            Verdict::Retry(_, None)
        ));
        assert!(matches!(
            classify(403, "", None, None),
            Verdict::Retry(_, None)
        ));
        assert!(matches!(
            classify(500, "", None, None),
            Verdict::Retry(_, None)
        ));
        assert_eq!(
            classify(429, "", Some(Duration::from_secs(7)), None),
            Verdict::Retry("HTTP 429".into(), Some(Duration::from_secs(7)))
        );
        assert!(matches!(
            classify(503, "", None, None),
            Verdict::Retry(_, Some(Duration::ZERO))
        ));
        // Only the four throttling answers read Retry-After (as Telegraf; the docs say so).
        assert_eq!(
            classify(500, "", Some(Duration::from_secs(7)), None),
            Verdict::Retry("HTTP 500".into(), None)
        );
    }

    #[test]
    fn influx_error_header_is_appended() {
        match classify(500, "", None, Some("engine: disk full")) {
            Verdict::Retry(m, None) => {
                assert_eq!(m, "HTTP 500 (X-Influx-Error: engine: disk full)")
            }
            v => panic!("{v:?}"),
        }
    }
}
