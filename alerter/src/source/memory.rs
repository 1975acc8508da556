//! Points held in memory, queried natively with the semantics of the InfluxQL translation
//! (`crate::query`). Used by `wk-alerter test RULE --data FILE.lp` and stream mode (`crate::stream`).
//!
//! Storage mirrors InfluxDB's: a series is (measurement, tag set); a point is (series, time);
//! writing the same point again merges its fields, the newer value winning.
//!
//! The bytes held are accounted (an estimate of the heap used: the strings plus a fixed cost
//! per series, point and field, calibrated on `stream::memory_per_point`), so that the stream
//! window can be bounded by memory and not only by points.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wk_core::metric::{FieldValue, Metric};

use super::{QuerySource, Row, Series, SourceError, number};
use crate::model::Value;
use crate::query::{Aggregate, Query, VALUE_COLUMN};
use wk_core::lineproto::{self, LineProtocolError};

type SeriesKey = (String, Vec<(String, String)>);
type Points = BTreeMap<i64, BTreeMap<String, FieldValue>>;

/// An in-memory point store answering rule queries.
#[derive(Debug, Default)]
pub struct MemorySource {
    store: RwLock<Store>,
    /// Points dropped by [`MemorySource::enforce_bounds`] since the start.
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Store {
    series: BTreeMap<SeriesKey, Points>,
    /// Points held (kept in step with `series`).
    points: usize,
    /// Estimated bytes held (kept in step with `series`).
    bytes: usize,
}

/// What a series costs besides its strings (map node, key vectors and string headers).
const SERIES_COST: usize = 128;
/// What a tag costs besides its strings.
const TAG_COST: usize = 48;
/// What a point costs besides its fields (its node in the series' map and its field map).
const POINT_COST: usize = 80;
/// What a field costs besides its name and string value (node share, header, value).
const FIELD_COST: usize = 96;

fn series_bytes((name, tags): &SeriesKey) -> usize {
    SERIES_COST
        + name.len()
        + tags
            .iter()
            .map(|(k, v)| TAG_COST + k.len() + v.len())
            .sum::<usize>()
}

fn field_bytes(name: &str, v: &FieldValue) -> usize {
    FIELD_COST
        + name.len()
        + match v {
            FieldValue::Str(s) => s.len(),
            _ => 0,
        }
}

fn point_bytes(fields: &BTreeMap<String, FieldValue>) -> usize {
    POINT_COST + fields.iter().map(|(k, v)| field_bytes(k, v)).sum::<usize>()
}

/// Points and estimated bytes held after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub points: usize,
    pub bytes: usize,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// A source holding these points.
    pub fn from_metrics<'a>(metrics: impl IntoIterator<Item = &'a Metric>) -> MemorySource {
        let s = MemorySource::new();
        for m in metrics {
            s.push(m);
        }
        s
    }

    /// A source holding the points of a line protocol document (points without a timestamp
    /// get `default_time`).
    pub fn from_line_protocol(
        text: &str,
        default_time: i64,
    ) -> Result<MemorySource, LineProtocolError> {
        Ok(MemorySource::from_metrics(&lineproto::parse(
            text,
            default_time,
        )?))
    }

    /// Adds (or merges) one point; returns what is held afterwards.
    pub fn push(&self, m: &Metric) -> Held {
        let key: SeriesKey = (
            m.name.to_string(),
            m.tags()
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let Store {
            series,
            points,
            bytes,
        } = &mut *store;
        let times = match series.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                *bytes += series_bytes(e.key());
                e.insert(BTreeMap::new())
            }
        };
        let fields = times.entry(m.time).or_insert_with(|| {
            *points += 1;
            *bytes += POINT_COST;
            BTreeMap::new()
        });
        for (k, v) in &m.fields {
            *bytes += field_bytes(k, v);
            if let Some(old) = fields.insert(k.to_string(), v.clone()) {
                *bytes -= field_bytes(k, &old);
            }
        }
        Held {
            points: *points,
            bytes: *bytes,
        }
    }

    /// Forgets points older than `time` (ns), and series left empty (the stream window).
    /// Returns how many points were forgotten.
    pub fn prune_before(&self, time: i64) -> usize {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let Store {
            series,
            points,
            bytes,
        } = &mut *store;
        let before = *points;
        series.retain(|key, held| {
            if held.first_key_value().is_none_or(|(t, _)| *t >= time) {
                return true;
            }
            let kept = held.split_off(&time);
            for fields in held.values() {
                *points -= 1;
                *bytes -= point_bytes(fields);
            }
            *held = kept;
            if held.is_empty() {
                *bytes -= series_bytes(key);
            }
            !held.is_empty()
        });
        before - *points
    }

    /// [`MemorySource::enforce_bounds`] on the point count only.
    pub fn enforce_max_points(&self, max: usize) -> usize {
        self.enforce_bounds(max, usize::MAX)
    }

    /// Drops the oldest points (across all series; at equal times in series order) until at
    /// most `max_points` and `max_bytes` are held, and counts them in
    /// [`MemorySource::dropped`]. Returns how many were dropped now. Cost: O(series + dropped
    /// × log series), nothing when within bounds.
    pub fn enforce_bounds(&self, max_points: usize, max_bytes: usize) -> usize {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        if store.points <= max_points && store.bytes <= max_bytes {
            return 0;
        }
        let Store {
            series,
            points,
            bytes,
        } = &mut *store;
        // Min-heap of (oldest time, series index) over the series, borrowed all at once so
        // that no key is cloned.
        let mut all: Vec<&mut Points> = series.values_mut().collect();
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = all
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.keys().next().map(|t| Reverse((*t, i))))
            .collect();
        let mut dropped = 0;
        while *points > max_points || *bytes > max_bytes {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            if let Some((_, fields)) = all[i].pop_first() {
                *points -= 1;
                *bytes -= point_bytes(&fields);
                dropped += 1;
            }
            if let Some(t) = all[i].keys().next() {
                heap.push(Reverse((*t, i)));
            }
        }
        drop(all);
        series.retain(|key, p| {
            if p.is_empty() {
                *bytes -= series_bytes(key);
            }
            !p.is_empty()
        });
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// Estimated bytes held (see the module comment).
    pub fn bytes(&self) -> usize {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.bytes
    }

    /// Points dropped by [`MemorySource::enforce_bounds`] since the source was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many series are held.
    pub fn series_count(&self) -> usize {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.series.len()
    }

    /// How many points are held.
    pub fn len(&self) -> usize {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.points
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest point time held, if any (a natural "now" for recorded data).
    pub fn latest_time(&self) -> Option<i64> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store
            .series
            .values()
            .filter_map(|p| p.keys().next_back().copied())
            .max()
    }
}

impl QuerySource for MemorySource {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let field = q.validate().map_err(|e| SourceError::Query(e.0))?;
        let (start, end) = q.window(now_ns);
        let mut groups: BTreeMap<Vec<String>, Vec<(i64, FieldValue)>> = BTreeMap::new();
        {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            for ((measurement, tags), points) in store.series.iter() {
                if *measurement != q.measurement {
                    continue;
                }
                let tag = |k: &str| {
                    tags.iter()
                        .find(|(tk, _)| tk == k)
                        .map_or("", |(_, v)| v.as_str())
                };
                if !q.filters.iter().all(|f| f.matches(tag(&f.tag)))
                    || !q.matches.iter().all(|m| m.matches(tag(m.tag())))
                {
                    continue;
                }
                let key: Vec<String> = q.group_by.iter().map(|t| tag(t).to_owned()).collect();
                let group = groups.entry(key).or_default();
                for (t, fields) in points.range((Bound::Excluded(start), Bound::Included(end))) {
                    if let Some(v) = fields.get(field) {
                        group.push((*t, v.clone()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (key, mut points) in groups {
            if points.is_empty() {
                continue;
            }
            // Stable: points of one time keep series order.
            points.sort_by_key(|(t, _)| *t);
            let rows = reduce(&q.aggregate, field, &points, end)?;
            if rows.is_empty() {
                continue;
            }
            let tags = q
                .group_by
                .iter()
                .zip(key)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v))
                .collect();
            out.push(Series {
                measurement: q.measurement.clone(),
                tags,
                columns: vec![VALUE_COLUMN.to_owned()],
                rows,
            });
        }
        out.sort_by(|a, b| a.tags.cmp(&b.tags));
        Ok(out)
    }

    fn influxql(&self, _text: &str, _now_ns: i64) -> Result<Vec<Series>, SourceError> {
        Err(SourceError::Unsupported(
            "influxql() needs an InfluxDB source (this rule runs over recorded or streamed points)"
                .into(),
        ))
    }
}

/// A stored field value as a query result value: an integer field stays an integer (an
/// unsigned one above `i64::MAX` saturates, as Telegraf writes it to InfluxDB 1.x).
fn result_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Float(f) => Value::Float(*f),
        FieldValue::Int(i) => Value::Int(*i),
        FieldValue::Uint(u) => Value::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Str(s) => Value::Str(s.clone()),
    }
}

fn row(time: i64, v: Value) -> Row {
    Row {
        time,
        values: vec![Some(v)],
    }
}

/// Reduces one group's points (sorted by time) to result rows.
fn reduce(
    agg: &Aggregate,
    field: &str,
    points: &[(i64, FieldValue)],
    end: i64,
) -> Result<Vec<Row>, SourceError> {
    let numeric = || -> Result<Vec<(i64, f64)>, SourceError> {
        points
            .iter()
            .map(|(t, v)| {
                number(&result_value(v)).map(|f| (*t, f)).ok_or_else(|| {
                    SourceError::Type(format!(
                        "{}() needs a numeric field; {field:?} holds {}",
                        agg.name(),
                        type_name(v)
                    ))
                })
            })
            .collect()
    };
    // Every point an integer: the selectors and sum keep the type (InfluxDB answers an
    // integer field's max, min, last, percentile and sum with integers).
    let ints = || -> Option<Vec<(i64, i64)>> {
        points
            .iter()
            .map(|(t, v)| match result_value(v) {
                Value::Int(i) => Some((*t, i)),
                _ => None,
            })
            .collect()
    };
    Ok(match agg {
        Aggregate::Raw => points
            .iter()
            .map(|(t, v)| row(*t, result_value(v)))
            .collect(),
        Aggregate::Last => {
            // The latest point; at equal times the greater value, as InfluxDB's last().
            let mut best: Option<&(i64, FieldValue)> = None;
            for p in points {
                let better = match best {
                    None => true,
                    Some(b) => p.0 > b.0 || (p.0 == b.0 && greater(&p.1, &b.1)),
                };
                if better {
                    best = Some(p);
                }
            }
            best.map(|(t, v)| row(*t, result_value(v)))
                .into_iter()
                .collect()
        }
        Aggregate::Count => vec![row(
            end,
            Value::Int(i64::try_from(points.len()).unwrap_or(i64::MAX)),
        )],
        Aggregate::Mean => {
            let p = numeric()?;
            let sum: f64 = p.iter().map(|(_, v)| v).sum();
            vec![row(end, Value::Float(sum / p.len() as f64))]
        }
        Aggregate::Sum => match ints() {
            // Wrapping on overflow, as InfluxDB's integer sum (Go's int64 addition).
            Some(p) => vec![row(
                end,
                Value::Int(p.iter().fold(0i64, |a, (_, v)| a.wrapping_add(*v))),
            )],
            None => {
                let p = numeric()?;
                vec![row(end, Value::Float(p.iter().map(|(_, v)| v).sum()))]
            }
        },
        Aggregate::Max | Aggregate::Min => {
            let want_max = *agg == Aggregate::Max;
            match ints() {
                Some(p) => select_extreme(&p, want_max)
                    .map(|(t, v)| row(t, Value::Int(v)))
                    .into_iter()
                    .collect(),
                None => select_extreme(&numeric()?, want_max)
                    .map(|(t, v)| row(t, Value::Float(v)))
                    .into_iter()
                    .collect(),
            }
        }
        Aggregate::Percentile(pct) => {
            let ints = ints();
            let floats = if ints.is_none() {
                numeric()?
            } else {
                Vec::new()
            };
            // InfluxDB's nearest rank: i = floor(n * p / 100 + 0.5) - 1, no point when outside.
            let n = points.len();
            let i = (n as f64 * pct / 100.0 + 0.5).floor() as i64 - 1;
            if i < 0 || i as usize >= n {
                return Ok(Vec::new());
            }
            let i = i as usize;
            match ints {
                Some(mut p) => {
                    p.sort_by_key(|(_, v)| *v);
                    let (t, v) = p[i];
                    vec![row(t, Value::Int(v))]
                }
                None => {
                    let mut p = floats;
                    p.sort_by(|a, b| a.1.total_cmp(&b.1));
                    let (t, v) = p[i];
                    vec![row(t, Value::Float(v))]
                }
            }
        }
        Aggregate::Derivative { unit, non_negative } => {
            let p = numeric()?;
            let unit_ns = unit.as_nanos() as f64;
            let mut rows = Vec::new();
            let mut prev: Option<(i64, f64)> = None;
            for &(t, v) in &p {
                match prev {
                    // A second point at the same time does not advance the stream: InfluxDB
                    // keeps the first one.
                    Some((pt, _)) if pt == t => continue,
                    Some((pt, pv)) => {
                        let diff = v - pv;
                        if !(*non_negative && diff < 0.0) {
                            rows.push(row(t, Value::Float(diff / ((t - pt) as f64 / unit_ns))));
                        }
                    }
                    None => {}
                }
                prev = Some((t, v));
            }
            rows
        }
    })
}

/// The point with the greatest (`want_max`) or least value; ties go to the earliest point,
/// as InfluxDB's max/min selectors.
fn select_extreme<T: PartialOrd + Copy>(points: &[(i64, T)], want_max: bool) -> Option<(i64, T)> {
    let mut best: Option<(i64, T)> = None;
    for &(t, v) in points {
        let better = match best {
            None => true,
            Some((_, b)) => (want_max && v > b) || (!want_max && v < b),
        };
        if better {
            best = Some((t, v));
        }
    }
    best
}

/// `a > b` for two values of one field (numbers by value, strings bytewise, false < true).
fn greater(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Int(x), FieldValue::Int(y)) => x > y,
        (FieldValue::Str(x), FieldValue::Str(y)) => x > y,
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x > y,
        _ => match (number(&result_value(a)), number(&result_value(b))) {
            (Some(x), Some(y)) => x > y,
            _ => false,
        },
    }
}

fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Float(_) => "a float",
        FieldValue::Int(_) => "an integer",
        FieldValue::Uint(_) => "an unsigned integer",
        FieldValue::Bool(_) => "a boolean",
        FieldValue::Str(_) => "a string",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::query::TagFilter;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_700_000_000 * S;

    fn source() -> MemorySource {
        // Two hosts, cpu-total and cpu0, one point every 10 s for the last minute (t = -50..0 s)
        // and one old point (t = -70 s) outside the default 1m range.
        let mut text = String::new();
        for (i, secs) in [-70i64, -50, -40, -30, -20, -10, 0].iter().enumerate() {
            let t = NOW + secs * S;
            let i = i as f64;
            text += &format!("cpu,host=a,cpu=cpu-total idle={} {t}\n", 90.0 - i);
            text += &format!("cpu,host=b,cpu=cpu-total idle={} {t}\n", 50.0 + i * 2.0);
            text += &format!("cpu,host=a,cpu=cpu0 idle=1 {t}\n");
        }
        MemorySource::from_line_protocol(&text, 0).unwrap()
    }

    fn q(agg: Aggregate) -> Query {
        let mut q = Query::new("cpu");
        q.field = Some("idle".into());
        q.aggregate = agg;
        q.filters.push(TagFilter {
            tag: "cpu".into(),
            value: "cpu-total".into(),
            negate: false,
        });
        q.group_by = vec!["host".into()];
        q
    }

    fn values(agg: Aggregate) -> Vec<(String, Vec<(i64, f64)>)> {
        source()
            .query(&q(agg), NOW)
            .unwrap()
            .into_iter()
            .map(|s| {
                let rows = s
                    .rows
                    .iter()
                    .map(|r| {
                        let v = r.values[0].as_ref().and_then(number).unwrap();
                        ((r.time - NOW) / S, v)
                    })
                    .collect();
                (s.tags["host"].clone(), rows)
            })
            .collect()
    }

    #[test]
    fn each_aggregate() {
        // host a: 89 88 87 86 85 84 at -50..0; host b: 52 54 56 58 60 62.
        let a = |agg| values(agg)[0].1.clone();
        let b = |agg| values(agg)[1].1.clone();
        assert_eq!(a(Aggregate::Mean), vec![(0, 86.5)]);
        assert_eq!(b(Aggregate::Mean), vec![(0, 57.0)]);
        assert_eq!(a(Aggregate::Max), vec![(-50, 89.0)]);
        assert_eq!(a(Aggregate::Min), vec![(0, 84.0)]);
        assert_eq!(a(Aggregate::Last), vec![(0, 84.0)]);
        assert_eq!(a(Aggregate::Sum), vec![(0, 519.0)]);
        assert_eq!(a(Aggregate::Count), vec![(0, 6.0)]);
        // n = 6: p50 → floor(3.5) - 1 = 2 → third smallest (86 at -20 s).
        assert_eq!(a(Aggregate::Percentile(50.0)), vec![(-20, 86.0)]);
        assert_eq!(b(Aggregate::Percentile(100.0)), vec![(0, 62.0)]);
        // p1 of 6 points: floor(0.56) - 1 = -1 → no point, hence no series.
        assert!(values(Aggregate::Percentile(1.0)).is_empty());
        assert_eq!(a(Aggregate::Raw).len(), 6);
        assert_eq!(a(Aggregate::Raw)[0], (-50, 89.0));
    }

    #[test]
    fn derivative_and_counter_reset() {
        let text = "net,host=a bytes=100i 10000000000\n\
                    net,host=a bytes=300i 20000000000\n\
                    net,host=a bytes=50i 30000000000\n\
                    net,host=a bytes=250i 40000000000\n\
                    net,host=a bytes=999i 40000000000\n";
        let src = MemorySource::from_line_protocol(text, 0).unwrap();
        let mut q = Query::new("net");
        q.field = Some("bytes".into());
        q.range = Duration::from_secs(60);
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_secs(1),
            non_negative: false,
        };
        let now = 40 * S;
        let rates = |q: &Query| -> Vec<(i64, f64)> {
            src.query(q, now).unwrap()[0]
                .rows
                .iter()
                .map(|r| (r.time / S, r.values[0].as_ref().and_then(number).unwrap()))
                .collect()
        };
        // The same series and time written twice is one point: the later write (999) wins.
        assert_eq!(rates(&q), vec![(20, 20.0), (30, -25.0), (40, 94.9)]);
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_secs(10),
            non_negative: true,
        };
        assert_eq!(rates(&q), vec![(20, 200.0), (40, 949.0)]);
        // One point has no rate: no series at all.
        q.range = Duration::from_secs(5);
        assert!(src.query(&q, now).unwrap().is_empty());
    }

    #[test]
    fn where_not_group_by_missing_tags_and_range_bounds() {
        let src = source();
        let mut q = q(Aggregate::Count);
        q.filters = vec![TagFilter {
            tag: "cpu".into(),
            value: "cpu0".into(),
            negate: true,
        }];
        q.group_by = vec!["host".into(), "dc".into()];
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(got.len(), 2);
        // "dc" is absent from every series: grouped as "" and left out of the tags.
        assert_eq!(got[0].tags.len(), 1);
        // Range is (now - 1m, now]: the point at exactly -60 s would be out, -50 s is in.
        q.range = Duration::from_secs(50);
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(
            got[0].rows[0].values[0],
            Some(Value::Int(5)),
            "(-50 s, 0] holds -40..0"
        );
        // No group_by: one series over everything that passed the filter.
        q.group_by.clear();
        q.filters.clear();
        q.range = Duration::from_secs(60);
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].tags.is_empty());
        assert_eq!(got[0].rows[0].values[0], Some(Value::Int(18)));
    }

    /// Issue 10 item 16: an integer field reached rules as a float. The selectors and sum of
    /// integers are integers (as InfluxDB answers them), count always is, mean is a float.
    #[test]
    fn integer_fields_stay_integers() {
        let src = MemorySource::from_line_protocol(
            "net,host=a drops=7i 10\nnet,host=a drops=3i 20\nnet,host=a drops=9i 30\n\
             net,host=a big=18446744073709551615u 30\nnet,host=b drops=1.5 30\n",
            0,
        )
        .unwrap();
        let mut q = Query::new("net");
        q.field = Some("drops".into());
        q.filters.push(TagFilter {
            tag: "host".into(),
            value: "a".into(),
            negate: false,
        });
        let one = |q: &Query| src.query(q, 30).unwrap()[0].rows.clone();
        let value = |q: &Query| one(q).last().unwrap().values[0].clone().unwrap();
        for (agg, want) in [
            (Aggregate::Raw, Value::Int(9)),
            (Aggregate::Last, Value::Int(9)),
            (Aggregate::Max, Value::Int(9)),
            (Aggregate::Min, Value::Int(3)),
            (Aggregate::Sum, Value::Int(19)),
            (Aggregate::Count, Value::Int(3)),
            (Aggregate::Percentile(50.0), Value::Int(7)),
            (Aggregate::Mean, Value::Float(19.0 / 3.0)),
        ] {
            q.aggregate = agg.clone();
            assert_eq!(value(&q), want, "{agg:?}");
        }
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_nanos(10),
            non_negative: false,
        };
        assert_eq!(value(&q), Value::Float(6.0));
        // Unsigned: an integer, saturating above i64::MAX (as Telegraf writes it to 1.x).
        q.field = Some("big".into());
        q.aggregate = Aggregate::Last;
        assert_eq!(value(&q), Value::Int(i64::MAX));
        // Host b's field is a float: merged with a's integers the group is floats.
        q.field = Some("drops".into());
        q.filters.clear();
        q.aggregate = Aggregate::Max;
        assert_eq!(value(&q), Value::Float(9.0));
        q.aggregate = Aggregate::Count;
        assert_eq!(value(&q), Value::Int(4));
    }

    #[test]
    fn type_errors_and_influxql() {
        let src = MemorySource::from_line_protocol("http,host=a result=\"ok\" 1\n", 0).unwrap();
        let mut q = Query::new("http");
        q.field = Some("result".into());
        q.aggregate = Aggregate::Last;
        let got = src.query(&q, 2).unwrap();
        assert_eq!(got[0].rows[0].values[0], Some(Value::Str("ok".into())));
        q.aggregate = Aggregate::Mean;
        let err = src.query(&q, 2).unwrap_err();
        assert!(err.to_string().contains("holds a string"), "{err}");
        let err = src.influxql("SELECT 1", 0).unwrap_err();
        assert!(
            err.to_string().contains("needs an InfluxDB source"),
            "{err}"
        );
    }

    #[test]
    fn prune_keeps_recent_points() {
        let src = source();
        assert_eq!(src.len(), 21);
        assert_eq!(src.prune_before(NOW - 10 * S), 15);
        assert_eq!(src.len(), 6);
        assert_eq!(src.latest_time(), Some(NOW));
        assert_eq!(src.prune_before(NOW + 1), 6);
        assert!(src.is_empty());
        assert_eq!(src.series_count(), 0);
    }

    #[test]
    fn len_counts_points_not_writes() {
        // A second write of the same series and time merges into one point.
        let src =
            MemorySource::from_line_protocol("m,h=a x=1 5\nm,h=a y=2 5\nm,h=b x=1 5\n", 0).unwrap();
        assert_eq!(src.len(), 2);
        assert_eq!(src.series_count(), 2);
    }

    #[test]
    fn bytes_are_accounted_in_step_and_bound_the_window() {
        let src = MemorySource::new();
        let big = "x".repeat(10_000);
        for t in 0..10 {
            let m = lineproto::parse_line(&format!("m,h=a s=\"{big}\",v=1 {t}"), 0).unwrap();
            src.push(&m);
        }
        let held = src.bytes();
        assert!(held > 100_000 && held < 104_000, "{held}");
        // Overwriting a field replaces its bytes.
        src.push(&lineproto::parse_line("m,h=a s=\"\" 9", 0).unwrap());
        assert!(src.bytes() < held - 9_900, "{}", src.bytes());
        // The byte bound drops the oldest points first.
        let dropped = src.enforce_bounds(usize::MAX, 30_000);
        assert_eq!(dropped, 7);
        assert!(src.bytes() <= 30_000);
        assert_eq!(src.latest_time(), Some(9));
        assert_eq!(src.prune_before(9), 2);
        src.enforce_bounds(0, 0);
        assert_eq!((src.len(), src.bytes()), (0, 0), "every byte given back");
    }

    #[test]
    fn max_points_drops_the_oldest_across_series() {
        let src = MemorySource::from_line_protocol(
            "m,h=a x=1 10\nm,h=a x=2 40\nm,h=b x=3 20\nm,h=b x=4 30\nn x=5 25\n",
            0,
        )
        .unwrap();
        assert_eq!(src.enforce_max_points(10), 0);
        assert_eq!(src.dropped(), 0);
        // Oldest three: a@10, b@20, n@25 (n's only point: its series goes away).
        assert_eq!(src.enforce_max_points(2), 3);
        assert_eq!(src.len(), 2);
        assert_eq!(src.dropped(), 3);
        assert_eq!(src.series_count(), 2);
        let mut q = Query::new("m");
        q.field = Some("x".into());
        q.aggregate = Aggregate::Raw;
        q.range = Duration::from_secs(1);
        let got = src.query(&q, 100).unwrap();
        let times: Vec<i64> = got[0].rows.iter().map(|r| r.time).collect();
        assert_eq!(times, vec![30, 40]);
        assert_eq!(src.enforce_max_points(0), 2);
        assert!(src.is_empty());
        assert_eq!(src.dropped(), 5);
    }
}
