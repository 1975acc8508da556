//! VictoriaMetrics (single node, or a cluster's vmselect) answering rule queries in MetricsQL,
//! with the semantics of `crate::query` that the InfluxDB and memory sources share.
//!
//! How the builder maps (checked against victoria-metrics 1.79 by experiment, pinned by the
//! differential test `alerter/tests/rules`):
//! - **Names.** VictoriaMetrics stores the line `cpu,host=a usage_idle=5` (written to
//!   `/write?db=telegraf` or vminsert's `/influx/write`) as the series
//!   `cpu_usage_idle{db="telegraf",host="a"}`: `measurement_field`, tags as labels, and the
//!   `db` label only when the write named a database. A field named `value` is
//!   `cpu_value` too. The selector names the metric with `__name__="…"` (any characters) and
//!   adds `db="…"` when the source's `database` is set.
//! - **Tag filters.** `where`/`where_not` are `label="v"`/`label!="v"`; a missing label is the
//!   empty string in PromQL as in InfluxQL. PromQL anchors `=~` at both ends and InfluxQL does
//!   not, so `where_match(t, re)` becomes `t=~"(?s:.*)(?:re)(?s:.*)"` (a `^`/`$` inside still
//!   anchors at the text's ends, as in InfluxDB); `where_in` becomes an anchored alternation of
//!   escaped values (an empty list matches nothing and sends no request). Label names are
//!   escaped with `\` (MetricsQL's identifier escape), values are Go-syntax strings.
//! - **Window.** An instant query at `time = now` (in ms, VictoriaMetrics' resolution) with
//!   `[range]` reads `(now - range, now]`, the builder's window; `nocache=1` keeps
//!   VictoriaMetrics from moving a recent `time` back by its `-search.latencyOffset` (30 s).
//!   A range that is not whole milliseconds cannot be expressed and is an error.
//! - **Aggregates.** `sum`, `count`, `mean` and `last` are computed per series by
//!   VictoriaMetrics (`sum_over_time`, `count_over_time`, `last_over_time` with
//!   `tlast_over_time` for its time, in one request) and combined per group here: mean is
//!   Σsum / Σcount over the group's series (not a mean of means), so groups that merge
//!   several series agree with InfluxDB's `GROUP BY`. The selectors that return the time of
//!   the selected point (`max`, `min`: `tmax_over_time` gives the *latest* of equal maxima
//!   where InfluxDB gives the earliest), `percentile` (InfluxDB's nearest rank, not
//!   `quantile_over_time`'s interpolation), derivatives (between consecutive points, not
//!   `deriv`'s regression) and raw points read the window's samples through
//!   `/api/v1/export` and reduce them with the memory source's code.
//! - **Types.** VictoriaMetrics keeps every value as a float64: integer fields come back as
//!   floats (exact up to 2^53), `count` as an integer. Booleans are stored as 1 and 0, and
//!   string fields as 0: a rule must not read a string field from VictoriaMetrics.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use wk_core::metric::FieldValue;

use super::influxdb::InfluxAuth;
use super::{QuerySource, Row, Series, SourceError};
use crate::model::Value;
use crate::query::{Aggregate, Query, QueryError, TagMatch};

/// The server's name in errors.
const ENGINE: &str = "VictoriaMetrics";

/// The label that tells the rollups of one answer apart.
const ROLLUP_LABEL: &str = "__wk_rollup";

/// Where and how to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VictoriaMetricsConfig {
    /// The Prometheus API's base: `http://vm:8428` (single node) or
    /// `http://vmselect:8481/select/0/prometheus` (cluster, tenant 0).
    pub url: String,
    /// Only series with this `db` label (what the agents' `database` wrote); `None`: any.
    pub database: Option<String>,
    /// Basic credentials, or a token sent as `Authorization: Bearer` (vmauth).
    pub auth: InfluxAuth,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// Queries VictoriaMetrics over HTTP.
#[derive(Debug, Clone)]
pub struct VictoriaMetricsSource {
    config: VictoriaMetricsConfig,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// One value VictoriaMetrics computes per series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    Sum,
    Count,
    Last,
    /// The time of the last sample, in seconds.
    LastTime,
}

impl Rollup {
    /// The MetricsQL function (also the [`ROLLUP_LABEL`] value of its results).
    pub fn function(self) -> &'static str {
        match self {
            Rollup::Sum => "sum_over_time",
            Rollup::Count => "count_over_time",
            Rollup::Last => "last_over_time",
            Rollup::LastTime => "tlast_over_time",
        }
    }
}

/// What one rule query becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// An instant query (`/api/v1/query`) at `time_ms` of per-series rollups, combined per
    /// group by the alerter.
    Rollups { query: String, time_ms: i64 },
    /// The samples of `selector` with `start_ms <= time <= end_ms` (`/api/v1/export`),
    /// reduced by the alerter as the memory source does.
    Export {
        selector: String,
        start_ms: i64,
        end_ms: i64,
    },
    /// Nothing can match (`where_in` with an empty list): no request.
    Empty,
}

/// The rollups an aggregate needs, or `None` when it reads the samples.
fn rollups(agg: &Aggregate) -> Option<&'static [Rollup]> {
    match agg {
        Aggregate::Sum => Some(&[Rollup::Sum]),
        Aggregate::Count => Some(&[Rollup::Count]),
        Aggregate::Mean => Some(&[Rollup::Sum, Rollup::Count]),
        Aggregate::Last => Some(&[Rollup::Last, Rollup::LastTime]),
        Aggregate::Raw
        | Aggregate::Max
        | Aggregate::Min
        | Aggregate::Percentile(_)
        | Aggregate::Derivative { .. } => None,
    }
}

const NS_PER_MS: i64 = 1_000_000;

/// The MetricsQL for a query evaluated at `now_ns`; `database` adds the `db` label filter.
pub fn plan(q: &Query, database: Option<&str>, now_ns: i64) -> Result<Plan, QueryError> {
    let field = q.validate()?;
    let range_ns = q.range.as_nanos();
    if !range_ns.is_multiple_of(NS_PER_MS as u128) {
        return Err(QueryError(format!(
            "range {}: VictoriaMetrics keeps milliseconds, so the range must be whole \
             milliseconds",
            crate::query::duration_literal(q.range)
        )));
    }
    let range_ms = i64::try_from(range_ns / NS_PER_MS as u128).unwrap_or(i64::MAX);
    let Some(selector) = selector(q, field, database) else {
        return Ok(Plan::Empty);
    };
    let end_ms = now_ns.div_euclid(NS_PER_MS);
    Ok(match rollups(&q.aggregate) {
        None => Plan::Export {
            selector,
            start_ms: end_ms.saturating_sub(range_ms).saturating_add(1),
            end_ms,
        },
        Some(rollups) => {
            let parts: Vec<String> = rollups
                .iter()
                .map(|r| {
                    format!(
                        "label_set({}({selector}[{range_ms}ms]), {}, {})",
                        r.function(),
                        string_literal(ROLLUP_LABEL),
                        string_literal(r.function())
                    )
                })
                .collect();
            let query = if parts.len() == 1 {
                parts.concat()
            } else {
                format!("union({})", parts.join(", "))
            };
            Plan::Rollups {
                query,
                time_ms: end_ms,
            }
        }
    })
}

/// The series selector `{__name__="m_f",db="…",tag="v",…}`; `None` when it can match nothing.
pub fn selector(q: &Query, field: &str, database: Option<&str>) -> Option<String> {
    let mut parts = vec![format!(
        "__name__={}",
        string_literal(&metric_name(&q.measurement, field))
    )];
    if let Some(db) = database.filter(|d| !d.is_empty()) {
        parts.push(format!("db={}", string_literal(db)));
    }
    for f in &q.filters {
        let op = if f.negate { "!=" } else { "=" };
        parts.push(format!(
            "{}{op}{}",
            label_name(&f.tag),
            string_literal(&f.value)
        ));
    }
    for m in &q.matches {
        let re = match m {
            TagMatch::Regex { re, .. } => format!("(?s:.*)(?:{})(?s:.*)", re.0.as_str()),
            TagMatch::In { values, .. } if values.is_empty() => return None,
            TagMatch::In { values, .. } => {
                let alts: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
                alts.join("|")
            }
        };
        parts.push(format!("{}=~{}", label_name(m.tag()), string_literal(&re)));
    }
    Some(format!("{{{}}}", parts.join(",")))
}

/// The metric name VictoriaMetrics gives a field of a measurement written as line protocol.
pub fn metric_name(measurement: &str, field: &str) -> String {
    format!("{measurement}_{field}")
}

/// A label name in MetricsQL: characters outside `[A-Za-z0-9_]` (and a leading digit) are
/// escaped with `\`, which MetricsQL's lexer accepts before any character.
pub fn label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        let plain = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
        if !plain {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A MetricsQL string literal: double-quoted with JSON's escapes, which are a subset of Go's
/// (MetricsQL unquotes strings as Go does).
pub fn string_literal(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// Seconds with milliseconds, as VictoriaMetrics' `time`, `start` and `end` take them.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

impl VictoriaMetricsSource {
    /// A source whose requests run on `runtime` (see `super::http`).
    pub fn new(
        config: VictoriaMetricsConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<VictoriaMetricsSource, SourceError> {
        let client = super::http::client(ENGINE, &config.url, config.timeout)?;
        Ok(VictoriaMetricsSource {
            config,
            client,
            runtime,
        })
    }

    /// The configuration this source was built with.
    pub fn config(&self) -> &VictoriaMetricsConfig {
        &self.config
    }

    /// GET `{url}/api/v1/{api}` with `params`: the body of a 2xx answer.
    fn get(&self, api: &str, params: &[(&str, &str)]) -> Result<bytes::Bytes, SourceError> {
        let url = format!("{}/api/v1/{api}", self.config.url.trim_end_matches('/'));
        let mut req = self.client.get(url).query(params);
        req = match &self.config.auth {
            InfluxAuth::None => req,
            InfluxAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
            InfluxAuth::Token(t) => req.bearer_auth(t),
        };
        let (status, body) = super::http::send(
            ENGINE,
            &self.config.url,
            self.config.timeout,
            &self.runtime,
            req,
        )?;
        if !(200..300).contains(&status) {
            let detail = match serde_json::from_slice::<Answer>(&body) {
                Ok(Answer { error: Some(e), .. }) => e,
                _ => String::from_utf8_lossy(&body[..body.len().min(300)])
                    .trim()
                    .to_owned(),
            };
            return Err(SourceError::Victoria(format!("HTTP {status}: {detail}")));
        }
        Ok(body)
    }

    /// Runs an instant query at `time_ms`: (labels, value) per result series.
    fn instant(&self, query: &str, time_ms: i64) -> Result<Vec<Sample>, SourceError> {
        let time = seconds(time_ms);
        let body = self.get(
            "query",
            &[("query", query), ("time", &time), ("nocache", "1")],
        )?;
        decode_instant(&body)
    }

    /// The samples of `selector` in `[start_ms, end_ms]`.
    fn export(
        &self,
        selector: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<ExportLine>, SourceError> {
        let (start, end) = (seconds(start_ms), seconds(end_ms));
        let body = self.get(
            "export",
            &[("match[]", selector), ("start", &start), ("end", &end)],
        )?;
        decode_export(&body)
    }
}

impl QuerySource for VictoriaMetricsSource {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let plan = plan(q, self.config.database.as_deref(), now_ns)
            .map_err(|e| SourceError::Query(e.0))?;
        match plan {
            Plan::Empty => Ok(Vec::new()),
            Plan::Rollups { query, time_ms } => combine(q, &self.instant(&query, time_ms)?, now_ns),
            Plan::Export {
                selector,
                start_ms,
                end_ms,
            } => {
                let lines = self.export(&selector, start_ms, end_ms)?;
                reduce_samples(q, lines, now_ns)
            }
        }
    }

    fn influxql(&self, _text: &str, _now_ns: i64) -> Result<Vec<Series>, SourceError> {
        Err(SourceError::Unsupported(
            "influxql() needs an InfluxDB source; this alerter queries VictoriaMetrics: \
             write the query with query(\"measurement\").field(..) instead"
                .into(),
        ))
    }
}

/// Reduces exported samples exactly as the memory source reduces its points: series in tag
/// order, one value per time in a series (the last one written, as the memory source keeps
/// it; VictoriaMetrics may export a series in several lines and keeps repeated writes), the
/// points of a group in time order (series order at equal times), then the same reduction.
/// Tags are read once per series, not copied per sample.
fn reduce_samples(
    q: &Query,
    mut lines: Vec<ExportLine>,
    now_ns: i64,
) -> Result<Vec<Series>, SourceError> {
    let field = q.field.as_deref().unwrap_or_default();
    let (_, end) = q.window(now_ns);
    for line in &mut lines {
        line.metric.remove("__name__");
    }
    lines.sort_by(|a, b| a.metric.cmp(&b.metric));
    let mut groups: BTreeMap<Vec<String>, Vec<(i64, FieldValue)>> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let tags = &lines[i].metric;
        let mut series: Vec<(i64, f64)> = Vec::new();
        while i < lines.len() && lines[i].metric == *tags {
            let line = &lines[i];
            series.extend(
                line.values
                    .iter()
                    .zip(&line.timestamps)
                    .filter_map(|(v, t)| v.map(|v| (t.saturating_mul(NS_PER_MS), v))),
            );
            i += 1;
        }
        // Stable, so of equal times the last written stays last; keep only that one.
        series.sort_by_key(|(t, _)| *t);
        let mut kept: Vec<(i64, f64)> = Vec::with_capacity(series.len());
        for p in series {
            match kept.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => kept.push(p),
            }
        }
        let key = q
            .group_by
            .iter()
            .map(|t| tags.get(t).cloned().unwrap_or_default())
            .collect();
        groups
            .entry(key)
            .or_default()
            .extend(kept.into_iter().map(|(t, v)| (t, FieldValue::Float(v))));
    }
    let mut out = Vec::new();
    for (key, mut points) in groups {
        if points.is_empty() {
            continue;
        }
        points.sort_by_key(|(t, _)| *t);
        let rows = super::memory::reduce(&q.aggregate, field, &points, end)?;
        if !rows.is_empty() {
            out.push(Series::of_group(q, key, rows));
        }
    }
    out.sort_by(|a, b| a.tags.cmp(&b.tags));
    Ok(out)
}

/// One series' rollups.
#[derive(Debug, Default)]
struct PerSeries {
    sum: Option<f64>,
    count: Option<f64>,
    last: Option<f64>,
    last_time: Option<f64>,
}

/// Combines the per-series rollups of an instant answer into one row per group.
fn combine(q: &Query, samples: &[Sample], now_ns: i64) -> Result<Vec<Series>, SourceError> {
    // Per series (its labels without the rollup label, and without the metric name, which
    // `last_over_time` keeps and the others drop), then per group.
    let mut series: HashMap<Vec<(&str, &str)>, PerSeries> = HashMap::new();
    for s in samples {
        let mut kind = None;
        let key: Vec<(&str, &str)> = s
            .labels
            .iter()
            .filter(|(k, v)| {
                if *k == ROLLUP_LABEL {
                    kind = Some(v.as_str());
                }
                *k != ROLLUP_LABEL && *k != "__name__"
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let per = series.entry(key).or_default();
        let slot = match kind {
            Some(k) if k == Rollup::Sum.function() => &mut per.sum,
            Some(k) if k == Rollup::Count.function() => &mut per.count,
            Some(k) if k == Rollup::Last.function() => &mut per.last,
            Some(k) if k == Rollup::LastTime.function() => &mut per.last_time,
            other => {
                return Err(SourceError::Victoria(format!(
                    "unexpected series in the answer ({ROLLUP_LABEL}={other:?})"
                )));
            }
        };
        *slot = Some(s.value);
    }
    #[derive(Default)]
    struct Group {
        sum: f64,
        count: f64,
        last: Option<(i64, f64)>,
    }
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    for (labels, per) in &series {
        let tag = |t: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == t)
                .map_or("", |(_, v)| *v)
                .to_owned()
        };
        let key: Vec<String> = q.group_by.iter().map(|t| tag(t)).collect();
        let g = groups.entry(key).or_default();
        g.sum += per.sum.unwrap_or(0.0);
        g.count += per.count.unwrap_or(0.0);
        if let (Some(v), Some(t)) = (per.last, per.last_time) {
            let t = ((t * 1000.0).round() as i64).saturating_mul(NS_PER_MS);
            // The latest point; at equal times the greater value, as InfluxDB's last().
            if g.last.is_none_or(|(bt, bv)| t > bt || (t == bt && v > bv)) {
                g.last = Some((t, v));
            }
        }
    }
    let mut out = Vec::new();
    for (key, g) in groups {
        let row = match q.aggregate {
            Aggregate::Sum => Row {
                time: now_ns,
                values: vec![Some(Value::Float(g.sum))],
            },
            Aggregate::Count => Row {
                time: now_ns,
                values: vec![Some(Value::Int(g.count as i64))],
            },
            Aggregate::Mean if g.count > 0.0 => Row {
                time: now_ns,
                values: vec![Some(Value::Float(g.sum / g.count))],
            },
            Aggregate::Last => match g.last {
                Some((t, v)) => Row {
                    time: t,
                    values: vec![Some(Value::Float(v))],
                },
                None => continue,
            },
            _ => continue,
        };
        out.push(Series::of_group(q, key, vec![row]));
    }
    out.sort_by(|a, b| a.tags.cmp(&b.tags));
    Ok(out)
}

/// The Prometheus API's answer (`/api/v1/query`).
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    status: String,
    data: Option<Data>,
    error: Option<String>,
    /// A cluster's vmselect answered without some vmstorage nodes.
    #[serde(default, rename = "isPartial")]
    is_partial: bool,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<RawSample>,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[seconds, "value"]`.
    value: (serde_json::Value, String),
}

/// One series of an instant answer.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

fn decode_instant(body: &[u8]) -> Result<Vec<Sample>, SourceError> {
    let decode = |e: &dyn std::fmt::Display| SourceError::Victoria(format!("cannot decode: {e}"));
    let answer: Answer = serde_json::from_slice(body).map_err(|e| decode(&e))?;
    if answer.status != "success" {
        return Err(SourceError::Victoria(
            answer
                .error
                .unwrap_or_else(|| format!("status {:?}", answer.status)),
        ));
    }
    if answer.is_partial {
        return Err(SourceError::Victoria(
            "the answer is partial (some vmstorage nodes did not answer)".into(),
        ));
    }
    let data = answer.data.ok_or_else(|| decode(&"no data"))?;
    if data.result_type != "vector" {
        return Err(decode(&format!(
            "a {} where a vector was expected",
            data.result_type
        )));
    }
    data.result
        .into_iter()
        .map(|s| {
            let value = s.value.1.parse::<f64>().map_err(|e| decode(&e))?;
            Ok(Sample {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

/// One line of `/api/v1/export`.
#[derive(Debug, Clone, Deserialize)]
struct ExportLine {
    metric: BTreeMap<String, String>,
    /// `null` for a value JSON cannot write (NaN).
    values: Vec<Option<f64>>,
    timestamps: Vec<i64>,
}

fn decode_export(body: &[u8]) -> Result<Vec<ExportLine>, SourceError> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice::<ExportLine>(l)
                .map_err(|e| SourceError::Victoria(format!("cannot decode an export line: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{TagFilter, compile_regex};

    const NOW: i64 = 1_700_000_060_000_000_000;

    fn cpu(agg: Aggregate) -> Query {
        let mut q = Query::new("cpu");
        q.field = Some("usage_idle".into());
        q.aggregate = agg;
        q
    }

    #[test]
    fn rollups_render_as_one_instant_query() {
        let mut q = cpu(Aggregate::Mean);
        q.filters.push(TagFilter {
            tag: "cpu".into(),
            value: "cpu-total".into(),
            negate: false,
        });
        q.filters.push(TagFilter {
            tag: "host".into(),
            value: "db1".into(),
            negate: true,
        });
        q.group_by = vec!["host".into()];
        let sel = r#"{__name__="cpu_usage_idle",db="telegraf",cpu="cpu-total",host!="db1"}"#;
        assert_eq!(
            plan(&q, Some("telegraf"), NOW + 999_999).unwrap(),
            Plan::Rollups {
                query: format!(
                    "union(label_set(sum_over_time({sel}[60000ms]), \"__wk_rollup\", \"sum_over_time\"), \
                     label_set(count_over_time({sel}[60000ms]), \"__wk_rollup\", \"count_over_time\"))"
                ),
                time_ms: NOW / 1_000_000,
            }
        );
        let q = cpu(Aggregate::Count);
        let Plan::Rollups { query, .. } = plan(&q, None, NOW).unwrap() else {
            panic!()
        };
        assert_eq!(
            query,
            "label_set(count_over_time({__name__=\"cpu_usage_idle\"}[60000ms]), \"__wk_rollup\", \"count_over_time\")"
        );
    }

    #[test]
    fn selectors_and_point_aggregates_read_the_samples() {
        for agg in [
            Aggregate::Raw,
            Aggregate::Max,
            Aggregate::Min,
            Aggregate::Percentile(90.0),
            Aggregate::Derivative {
                unit: Duration::from_secs(1),
                non_negative: true,
            },
        ] {
            assert_eq!(
                plan(&cpu(agg), None, NOW).unwrap(),
                Plan::Export {
                    selector: "{__name__=\"cpu_usage_idle\"}".into(),
                    start_ms: NOW / 1_000_000 - 60_000 + 1,
                    end_ms: NOW / 1_000_000,
                }
            );
        }
        assert_eq!(seconds(1_700_000_000_001), "1700000000.001");
        assert_eq!(seconds(-1), "-1.999");
    }

    /// PromQL anchors `=~`, InfluxQL does not: the pattern is wrapped, values are escaped.
    #[test]
    fn regexes_keep_influxql_semantics() {
        let mut q = cpu(Aggregate::Max);
        q.matches.push(TagMatch::Regex {
            tag: "host".into(),
            re: compile_regex(r#"^web\d+"/a$"#).unwrap(),
        });
        q.matches.push(TagMatch::In {
            tag: "dc".into(),
            values: vec!["eu.1".into(), "u's".into(), "".into()],
        });
        let sel = selector(&q, "usage_idle", None).unwrap();
        assert_eq!(
            sel,
            r#"{__name__="cpu_usage_idle",host=~"(?s:.*)(?:^web\\d+\"/a$)(?s:.*)",dc=~"eu\\.1|u's|"}"#
        );
        q.matches.push(TagMatch::In {
            tag: "dc".into(),
            values: vec![],
        });
        assert_eq!(plan(&q, None, NOW).unwrap(), Plan::Empty);
    }

    #[test]
    fn hostile_names_and_values_stay_literals() {
        let mut q = Query::new("cpu\"} or vector(1) #");
        q.field = Some("f\\".into());
        q.filters.push(TagFilter {
            tag: "h ost\"=\"x".into(),
            value: "a\"} or vector(1)\n\\".into(),
            negate: false,
        });
        q.filters.push(TagFilter {
            tag: "0é".into(),
            value: String::new(),
            negate: true,
        });
        assert_eq!(
            selector(&q, "f\\", None).unwrap(),
            r#"{__name__="cpu\"} or vector(1) #_f\\",h\ ost\"\=\"x="a\"} or vector(1)\n\\",\0\é!=""}"#
        );
    }

    #[test]
    fn a_range_below_milliseconds_is_an_error() {
        let mut q = cpu(Aggregate::Mean);
        q.range = Duration::from_micros(1500);
        let e = plan(&q, None, NOW).unwrap_err();
        assert!(
            e.0.contains("range 1500u") && e.0.contains("milliseconds"),
            "{e}"
        );
    }

    #[test]
    fn rollups_combine_per_group() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"host":"a","cpu":"0","__wk_rollup":"sum_over_time"},"value":[1,"10"]},
            {"metric":{"host":"a","cpu":"0","__wk_rollup":"count_over_time"},"value":[1,"4"]},
            {"metric":{"host":"a","cpu":"1","__wk_rollup":"sum_over_time"},"value":[1,"2"]},
            {"metric":{"host":"a","cpu":"1","__wk_rollup":"count_over_time"},"value":[1,"1"]},
            {"metric":{"cpu":"1","__wk_rollup":"sum_over_time"},"value":[1,"7"]},
            {"metric":{"cpu":"1","__wk_rollup":"count_over_time"},"value":[1,"2"]}]}}"#;
        let samples = decode_instant(body).unwrap();
        let mut q = cpu(Aggregate::Mean);
        q.group_by = vec!["host".into()];
        let got = combine(&q, &samples, NOW).unwrap();
        assert_eq!(got.len(), 2);
        // Σsum / Σcount over the group's series: 12 / 5, not the mean of 2.5 and 2.
        assert!(got[0].tags.is_empty());
        assert_eq!(got[0].rows[0].values[0], Some(Value::Float(3.5)));
        assert_eq!(got[1].tags["host"], "a");
        assert_eq!(
            got[1].rows[0],
            Row {
                time: NOW,
                values: vec![Some(Value::Float(12.0 / 5.0))]
            }
        );
        q.aggregate = Aggregate::Count;
        assert_eq!(
            combine(&q, &samples, NOW).unwrap()[1].rows[0].values[0],
            Some(Value::Int(5))
        );

        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"cpu_usage_idle","host":"a","cpu":"0","__wk_rollup":"last_over_time"},"value":[1,"1.5"]},
            {"metric":{"host":"a","cpu":"0","__wk_rollup":"tlast_over_time"},"value":[1,"1700000000.001"]},
            {"metric":{"host":"a","cpu":"1","__wk_rollup":"last_over_time"},"value":[1,"9"]},
            {"metric":{"host":"a","cpu":"1","__wk_rollup":"tlast_over_time"},"value":[1,"1700000000.001"]},
            {"metric":{"host":"a","cpu":"2","__wk_rollup":"last_over_time"},"value":[1,"99"]},
            {"metric":{"host":"a","cpu":"2","__wk_rollup":"tlast_over_time"},"value":[1,"1699999999"]}]}}"#;
        q.aggregate = Aggregate::Last;
        let got = combine(&q, &decode_instant(body).unwrap(), NOW).unwrap();
        // The latest point; at equal times the greater value.
        assert_eq!(
            got[0].rows[0],
            Row {
                time: 1_700_000_000_001_000_000,
                values: vec![Some(Value::Float(9.0))]
            }
        );
    }

    #[test]
    fn errors_and_partial_answers_are_reported() {
        let e =
            decode_instant(br#"{"status":"error","errorType":"422","error":"cannot parse query"}"#)
                .unwrap_err();
        assert_eq!(e.to_string(), "VictoriaMetrics error: cannot parse query");
        let e = decode_instant(
            br#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("partial"), "{e}");
        let e =
            decode_instant(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("matrix"), "{e}");
        let lines = decode_export(
            b"{\"metric\":{\"__name__\":\"m_f\",\"h\":\"a\"},\"values\":[1,2.5],\"timestamps\":[5,6]}\n\n",
        )
        .unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].values, vec![Some(1.0), Some(2.5)]);
        assert!(decode_export(b"not json\n").is_err());
    }

    /// The export reduction agrees with pushing every sample into a memory source and
    /// querying it (what it did before it read samples straight into groups), for every
    /// aggregate that reads samples and the rollup ones too: a series exported in two lines,
    /// a repeated time (the later value counts), a NaN, equal times across series, a group
    /// whose tag some series lack.
    #[test]
    fn export_reduction_agrees_with_the_memory_source() {
        use crate::source::MemorySource;
        use wk_core::metric::Metric;
        let t0 = NOW / 1_000_000 - 50_000;
        let line = |tags: &[(&str, &str)], vals: &[(i64, Option<f64>)]| ExportLine {
            metric: std::iter::once(("__name__".to_owned(), "cpu_usage_idle".to_owned()))
                .chain(tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
                .collect(),
            values: vals.iter().map(|(_, v)| *v).collect(),
            timestamps: vals.iter().map(|(t, _)| t0 + t * 1000).collect(),
        };
        let lines = vec![
            line(
                &[("host", "b"), ("cpu", "0")],
                &[(0, Some(5.0)), (10, Some(7.0))],
            ),
            line(
                &[("host", "a")],
                &[(0, Some(1.0)), (10, None), (20, Some(3.0))],
            ),
            line(
                &[("host", "b"), ("cpu", "0")],
                &[(10, Some(9.0)), (20, Some(2.0))],
            ),
            line(&[("cpu", "1")], &[(0, Some(4.0)), (20, Some(4.0))]),
            line(
                &[("host", "b"), ("cpu", "1")],
                &[(0, Some(7.0)), (30, Some(-1.5))],
            ),
        ];
        let mut metrics = Vec::new();
        for l in &lines {
            for (v, t) in l.values.iter().zip(&l.timestamps) {
                let Some(v) = v else { continue };
                let mut m = Metric::new("cpu", t * 1_000_000);
                for (k, val) in l.metric.iter().filter(|(k, _)| *k != "__name__") {
                    m.set_tag(k.clone(), val.clone());
                }
                m.add_field("usage_idle", FieldValue::Float(*v));
                metrics.push(m);
            }
        }
        let memory = MemorySource::from_metrics(&metrics);
        for agg in [
            Aggregate::Raw,
            Aggregate::Max,
            Aggregate::Min,
            Aggregate::Percentile(50.0),
            Aggregate::Derivative {
                unit: std::time::Duration::from_secs(1),
                non_negative: false,
            },
            Aggregate::Derivative {
                unit: std::time::Duration::from_secs(1),
                non_negative: true,
            },
            Aggregate::Last,
            Aggregate::Count,
            Aggregate::Mean,
            Aggregate::Sum,
        ] {
            for group_by in [
                vec![],
                vec!["host".to_owned()],
                vec!["host".to_owned(), "cpu".to_owned()],
            ] {
                let mut q = cpu(agg.clone());
                q.range = std::time::Duration::from_secs(60);
                q.group_by = group_by;
                let got = reduce_samples(&q, lines.clone(), NOW).unwrap();
                let want = memory.query(&q, NOW).unwrap();
                assert!(!want.is_empty(), "{agg:?}");
                assert_eq!(got, want, "{agg:?} by {:?}", q.group_by);
            }
        }
    }
}
