//! InfluxDB v1 `/query` client (InfluxDB 1.x, and 2.x/3.x through their v1 API). Requests run
//! as `super::http` describes (a synchronous caller, the program's tokio runtime).
//!
//! Raw `influxql()` from a rule is limited to read-only statements (`SELECT` without `INTO`,
//! `SHOW`) by [`check_read_only`]: InfluxDB 1.x executes `DROP DATABASE` even when it comes as
//! a GET, with only a deprecation warning, so the HTTP method is no guard.
//!
//! InfluxDB's JSON writes the float 5.0 as `5`, so a number's type cannot be read from the
//! answer. A rule query whose aggregate keeps the field's type (raw points, `last`, `max`,
//! `min`, `percentile`, `sum`) asks `SHOW FIELD KEYS` once per measurement (cached, see
//! [`FIELD_TYPES_TTL`]) and gives an integer field's values as integers, as the memory source
//! does; `count` is always an integer; everything else, and raw `influxql()`, gives floats.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{QuerySource, Row, Series, SourceError};
use crate::model::Value;
use crate::query::{Aggregate, Query, quote_ident};

/// The server's name in errors.
const ENGINE: &str = "InfluxDB";

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InfluxAuth {
    #[default]
    None,
    /// HTTP Basic (InfluxDB 1.x users).
    Basic { username: String, password: String },
    /// `Authorization: Token …` (InfluxDB 2.x/3.x v1 API).
    Token(String),
}

/// Where and how to query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxDbConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub database: String,
    /// Qualifies measurements in rule queries (`"rp"."cpu"`); `None` = the database default.
    pub retention_policy: Option<String>,
    pub auth: InfluxAuth,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// Queries InfluxDB over HTTP.
#[derive(Debug, Clone)]
pub struct InfluxDbSource {
    config: InfluxDbConfig,
    query_url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// Per measurement: its integer fields, from `SHOW FIELD KEYS`.
    field_types: Arc<Mutex<HashMap<String, FieldTypes>>>,
}

/// How long a measurement's field types are trusted. A field's type is fixed per shard, so
/// it changes (if ever) at a shard boundary; this bounds how long a change goes unseen.
pub const FIELD_TYPES_TTL: Duration = Duration::from_secs(600);
/// How soon the types are asked again when the field was not among them (or the question
/// failed): a new field, or a server that does not answer `SHOW FIELD KEYS`.
const FIELD_TYPES_RETRY: Duration = Duration::from_secs(60);

/// One measurement's field types, as of `fetched`.
#[derive(Debug)]
struct FieldTypes {
    fetched: Instant,
    /// Every field listed.
    known: BTreeSet<String>,
    /// The fields that are integers (or unsigned) in every shard.
    integers: BTreeSet<String>,
}

impl InfluxDbSource {
    /// A source whose requests run on `runtime` (call `query` from a thread that is not one of
    /// that runtime's async workers, e.g. inside `spawn_blocking`).
    pub fn new(
        config: InfluxDbConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<InfluxDbSource, SourceError> {
        let client = super::http::client(ENGINE, &config.url, config.timeout)?;
        let query_url = format!("{}/query", config.url.trim_end_matches('/'));
        Ok(InfluxDbSource {
            config,
            query_url,
            client,
            runtime,
            field_types: Arc::default(),
        })
    }

    /// Whether `field` of `measurement` is an integer field (cached; a failed lookup counts
    /// as "no": the values stay floats, as before types were asked).
    fn integer_field(&self, measurement: &str, field: &str) -> bool {
        let lock = || self.field_types.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = lock().get(measurement) {
            let age = t.fetched.elapsed();
            if age < FIELD_TYPES_TTL && (t.known.contains(field) || age < FIELD_TYPES_RETRY) {
                return t.integers.contains(field);
            }
        }
        let mut from = String::new();
        if let Some(rp) = self
            .config
            .retention_policy
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            from.push_str(&quote_ident(rp));
            from.push('.');
        }
        from.push_str(&quote_ident(measurement));
        let mut types = FieldTypes {
            fetched: Instant::now(),
            known: BTreeSet::new(),
            integers: BTreeSet::new(),
        };
        match self.run(&format!("SHOW FIELD KEYS FROM {from}")) {
            Ok(series) => {
                let (known, integers) = field_types(&series);
                types.known = known;
                types.integers = integers;
            }
            Err(e) => tracing::debug!(
                measurement,
                error = %e,
                "SHOW FIELD KEYS failed: numbers of this measurement are read as floats"
            ),
        }
        let integer = types.integers.contains(field);
        lock().insert(measurement.to_owned(), types);
        integer
    }

    /// The configuration this source was built with.
    pub fn config(&self) -> &InfluxDbConfig {
        &self.config
    }

    /// Sends one statement and decodes the series of its (first) result.
    pub fn run(&self, text: &str) -> Result<Vec<Series>, SourceError> {
        let mut req = self.client.get(&self.query_url).query(&[
            ("db", self.config.database.as_str()),
            ("q", text),
            ("epoch", "ns"),
        ]);
        req = match &self.config.auth {
            InfluxAuth::None => req,
            InfluxAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
            InfluxAuth::Token(t) => req.header("Authorization", format!("Token {t}")),
        };
        let (status, body) = super::http::send(
            ENGINE,
            &self.config.url,
            self.config.timeout,
            &self.runtime,
            req,
        )?;
        decode(status, &body)
    }
}

impl QuerySource for InfluxDbSource {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let text = q
            .to_influxql(self.config.retention_policy.as_deref(), now_ns)
            .map_err(|e| SourceError::Query(e.0))?;
        let mut series = self.run(&text)?;
        normalize(q, &mut series, now_ns);
        let integers = match q.aggregate {
            Aggregate::Count => true,
            Aggregate::Raw
            | Aggregate::Last
            | Aggregate::Max
            | Aggregate::Min
            | Aggregate::Sum
            | Aggregate::Percentile(_) => {
                // Only a result with integral numbers needs the question.
                let integral = series
                    .iter()
                    .flat_map(|s| &s.rows)
                    .flat_map(|r| &r.values)
                    .any(|v| matches!(v, Some(Value::Int(_))));
                integral
                    && q.field
                        .as_deref()
                        .is_some_and(|f| self.integer_field(&q.measurement, f))
            }
            Aggregate::Mean | Aggregate::Derivative { .. } => false,
        };
        if !integers {
            to_floats(&mut series);
        }
        Ok(series)
    }

    fn influxql(&self, text: &str, _now_ns: i64) -> Result<Vec<Series>, SourceError> {
        check_read_only(text)?;
        let mut series = self.run(text)?;
        for s in &mut series {
            s.tags.retain(|_, v| !v.is_empty());
        }
        // The columns' fields are not known here: every number is a float.
        to_floats(&mut series);
        Ok(series)
    }
}

/// The fields a `SHOW FIELD KEYS` answer lists, and those that are integers in every shard
/// (a field written with two types in two shards is listed once per type).
fn field_types(series: &[Series]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut known = BTreeSet::new();
    let mut other = BTreeSet::new();
    for s in series {
        let col = |name: &str| s.columns.iter().position(|c| c == name);
        let (Some(k), Some(t)) = (col("fieldKey"), col("fieldType")) else {
            continue;
        };
        for r in &s.rows {
            let (Some(Some(Value::Str(key))), Some(Some(Value::Str(ty)))) =
                (r.values.get(k), r.values.get(t))
            else {
                continue;
            };
            known.insert(key.clone());
            if ty != "integer" && ty != "unsigned" {
                other.insert(key.clone());
            }
        }
    }
    let integers = known.difference(&other).cloned().collect();
    (known, integers)
}

/// Turns the integers [`decode`] read into floats.
fn to_floats(series: &mut [Series]) {
    for v in series
        .iter_mut()
        .flat_map(|s| &mut s.rows)
        .flat_map(|r| &mut r.values)
        .flatten()
    {
        if let Value::Int(i) = v {
            *v = Value::Float(*i as f64);
        }
    }
}

/// Brings InfluxDB's answer to the shape the memory source gives: aggregates (mean, sum,
/// count) are stamped with the end of the range (InfluxDB stamps them with its start), tags
/// with empty values are dropped, series are sorted by tags.
fn normalize(q: &Query, series: &mut [Series], now_ns: i64) {
    let aggregated = matches!(
        q.aggregate,
        Aggregate::Mean | Aggregate::Sum | Aggregate::Count
    );
    for s in series.iter_mut() {
        s.tags.retain(|_, v| !v.is_empty());
        if aggregated {
            for r in &mut s.rows {
                r.time = now_ns;
            }
        }
    }
    series.sort_by(|a, b| a.tags.cmp(&b.tags));
}

/// Accepts only read-only InfluxQL: one statement, which starts with `SELECT` (and has no
/// `INTO`) or `SHOW`. Comments before the first word are skipped.
///
/// Where a string, a quoted identifier or a regex ends is InfluxDB's parser's call, by
/// context (`/` divides or opens a regex), and a check that guessed otherwise could be led to
/// skip a `; DROP DATABASE` hidden behind an opening quote inside a regex. So `;` (but a final
/// one) and the word `INTO` are refused anywhere in the text, quoted or not.
pub fn check_read_only(text: &str) -> Result<(), SourceError> {
    let refuse = |why: String| {
        Err(SourceError::Query(format!(
            "influxql(): only read-only statements (SELECT without INTO, SHOW) are allowed: {why}"
        )))
    };
    if text.trim_end().trim_end_matches(';').contains(';') {
        return refuse(
            "one statement per call: a ';' is refused anywhere in the text, even inside a \
             string (call influxql() once per statement)"
                .into(),
        );
    }
    let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    if words.into_iter().any(|w| w.eq_ignore_ascii_case("into")) {
        return refuse(
            "the word INTO is refused anywhere in the text, even quoted (SELECT ... INTO \
             writes data)"
                .into(),
        );
    }
    // The first word, after any comments.
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let first = rest
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match first.as_str() {
        "SELECT" | "SHOW" => Ok(()),
        "" => refuse("the statement is empty".into()),
        w => refuse(format!("the statement starts with {w}")),
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<StatementResult>,
    error: Option<String>,
}

/// One statement's answer, its series decoded straight into [`Series`] (see [`SeriesList`]).
#[derive(Default)]
struct StatementResult {
    series: Vec<Series>,
    error: Option<String>,
    /// The statement's or any of its series' `partial`.
    partial: bool,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ResultKey {
    Series,
    Error,
    Partial,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum SeriesKey {
    Name,
    Tags,
    Columns,
    Values,
    Partial,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for StatementResult {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StatementResult;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a statement result")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StatementResult, A::Error> {
                let mut out = StatementResult::default();
                while let Some(key) = map.next_key()? {
                    match key {
                        ResultKey::Series => {
                            let list = SeriesList {
                                out: &mut out.series,
                                partial: &mut out.partial,
                            };
                            map.next_value_seed(list)?;
                        }
                        ResultKey::Error => out.error = map.next_value()?,
                        ResultKey::Partial => out.partial |= map.next_value::<bool>()?,
                        ResultKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        de.deserialize_map(V)
    }
}

/// A statement's `series`, decoded into [`Series`] without an intermediate form: rows go
/// straight into [`Row`]s (the `time` cell taken out as it is read), and series whose columns
/// are those of the series before share one column list. A 1,000-host answer is thousands of
/// series with the same `["time","value"]`: the allocations this saves (the columns, their
/// names, the raw rows) were most of the decoding's cost (cache misses in the allocator).
struct SeriesList<'a> {
    out: &'a mut Vec<Series>,
    partial: &'a mut bool,
}

/// The last column list read, and what it decoded to.
#[derive(Default)]
struct ColumnCache {
    /// As written, `time` included.
    raw: Vec<String>,
    /// Without `time`.
    columns: Arc<[String]>,
    /// Where `time` is in a row.
    time_col: Option<usize>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SeriesList<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SeriesList<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of series")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut cache = ColumnCache::default();
        while let Some((series, partial)) = seq.next_element_seed(OneSeries(&mut cache))? {
            *self.partial |= partial;
            self.out.push(series);
        }
        Ok(())
    }
}

struct OneSeries<'a>(&'a mut ColumnCache);

impl<'de> serde::de::DeserializeSeed<'de> for OneSeries<'_> {
    type Value = (Series, bool);
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for OneSeries<'_> {
    type Value = (Series, bool);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a series")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let cache = self.0;
        let mut series = Series::default();
        let mut partial = false;
        let mut columns_seen = false;
        // Rows that came before the columns (InfluxDB writes the columns first; another
        // server may not): kept as read and split once the columns are known.
        let mut early: Option<Vec<Vec<Cell>>> = None;
        while let Some(key) = map.next_key()? {
            match key {
                SeriesKey::Name => series.measurement = map.next_value()?,
                SeriesKey::Tags => {
                    series.tags = map
                        .next_value::<Option<crate::model::Tags>>()?
                        .unwrap_or_default()
                }
                SeriesKey::Columns => {
                    map.next_value_seed(ColumnsSeed(&mut *cache))?;
                    columns_seen = true;
                }
                SeriesKey::Values if columns_seen => {
                    series.rows = map.next_value_seed(RowsSeed {
                        time_col: cache.time_col,
                        width: cache.columns.len(),
                    })?;
                }
                SeriesKey::Values => early = map.next_value()?,
                SeriesKey::Partial => partial = map.next_value()?,
                SeriesKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let time_col = if columns_seen {
            series.columns = cache.columns.clone();
            cache.time_col
        } else {
            None
        };
        if let Some(rows) = early {
            series.rows = rows
                .into_iter()
                .map(|cells| split_row(cells.into_iter().map(|Cell(v)| v), time_col))
                .collect::<Result<_, _>>()
                .map_err(serde::de::Error::custom)?;
        }
        Ok((series, partial))
    }
}

/// Reads a column list; one equal to the cached one is not built again.
struct ColumnsSeed<'a>(&'a mut ColumnCache);

impl<'de> serde::de::DeserializeSeed<'de> for ColumnsSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ColumnsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of column names")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.set(Vec::new());
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let cache = self.0;
        // Compared as read; names are only copied from the first difference on.
        let mut matched = 0;
        let mut fresh: Option<Vec<String>> = None;
        while let Some(Name(name)) = seq.next_element()? {
            match &mut fresh {
                Some(names) => names.push(name.into_owned()),
                None if cache.raw.get(matched).is_some_and(|c| *c == *name) => matched += 1,
                None => {
                    let mut names = cache.raw[..matched].to_vec();
                    names.push(name.into_owned());
                    fresh = Some(names);
                }
            }
        }
        match fresh {
            Some(names) => cache.set(names),
            // A prefix of the cached list.
            None if matched < cache.raw.len() => cache.set(cache.raw[..matched].to_vec()),
            None => {}
        }
        Ok(())
    }
}

impl ColumnCache {
    fn set(&mut self, raw: Vec<String>) {
        self.time_col = raw.iter().position(|c| c == "time");
        self.columns = raw
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.time_col)
            .map(|(_, c)| c.clone())
            .collect();
        self.raw = raw;
    }
}

/// A column name, borrowed from the answer when it has no escapes.
struct Name<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Owned(s)))
            }
        }
        de.deserialize_str(V)
    }
}

/// A series' `values`, each row split as it is read.
struct RowsSeed {
    time_col: Option<usize>,
    /// Cells per row without `time`.
    width: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for RowsSeed {
    type Value = Vec<Row>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Vec<Row>, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowsSeed {
    type Value = Vec<Row>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of rows")
    }
    fn visit_unit<E>(self) -> Result<Vec<Row>, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Row>, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(row) = seq.next_element_seed(RowSeed {
            time_col: self.time_col,
            width: self.width,
        })? {
            rows.push(row);
        }
        Ok(rows)
    }
}

struct RowSeed {
    time_col: Option<usize>,
    width: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed {
    type Value = Row;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Row, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed {
    type Value = Row;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row of cells")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Row, A::Error> {
        let mut row = RowSplit::new(self.time_col, self.width);
        while let Some(Cell(v)) = seq.next_element()? {
            row.push(v);
        }
        row.finish().map_err(serde::de::Error::custom)
    }
}

/// Splits a row's cells, as they come, into its time and its values.
struct RowSplit {
    time_col: Option<usize>,
    time: Option<Value>,
    values: Vec<Option<Value>>,
    i: usize,
}

impl RowSplit {
    fn new(time_col: Option<usize>, width: usize) -> RowSplit {
        RowSplit {
            time_col,
            time: None,
            values: Vec::with_capacity(width),
            i: 0,
        }
    }

    fn push(&mut self, v: Option<Value>) {
        if Some(self.i) == self.time_col {
            self.time = v;
        } else {
            self.values.push(v);
        }
        self.i += 1;
    }

    fn finish(self) -> Result<Row, String> {
        let time = match self.time_col {
            None => 0,
            Some(_) => row_time(self.time)?,
        };
        Ok(Row {
            time,
            values: self.values,
        })
    }
}

/// A row read before its columns, split now.
fn split_row(
    cells: impl Iterator<Item = Option<Value>>,
    time_col: Option<usize>,
) -> Result<Row, String> {
    let mut row = RowSplit::new(time_col, 0);
    cells.for_each(|v| row.push(v));
    row.finish()
}

/// A row's `time` cell: integer nanoseconds (the query asks `epoch=ns`).
fn row_time(cell: Option<Value>) -> Result<i64, String> {
    match cell {
        Some(Value::Int(t)) => Ok(t),
        other => Err(format!("time {other:?} is not integer nanoseconds")),
    }
}

/// One cell of an answer's `values`, decoded straight from the JSON text (no intermediate
/// `serde_json::Value`, whose per-cell allocation was most of the decoding time). A number
/// written without a fraction or exponent becomes an integer (exactly, also above 2^53;
/// above `i64::MAX` a float), any other a float. InfluxDB's JSON writes the float 1.0 as `1`
/// too, so which integers really are depends on the field's type: [`QuerySource::query`]
/// turns the others back into floats.
struct Cell(Option<Value>);

impl<'de> Deserialize<'de> for Cell {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Cell, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cell;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null, a boolean, a number or a string")
            }
            fn visit_unit<E>(self) -> Result<Cell, E> {
                Ok(Cell(None))
            }
            fn visit_none<E>(self) -> Result<Cell, E> {
                Ok(Cell(None))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Cell, E> {
                Ok(Cell(Some(Value::Bool(b))))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Cell, E> {
                Ok(Cell(Some(Value::Int(i))))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Cell, E> {
                Ok(Cell(Some(match i64::try_from(u) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(u as f64),
                })))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Cell, E> {
                Ok(Cell(Some(Value::Float(f))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Cell, E> {
                Ok(Cell(Some(Value::Str(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Cell, E> {
                Ok(Cell(Some(Value::Str(s))))
            }
        }
        de.deserialize_any(V)
    }
}

/// Decodes a `/query` answer (status and body).
pub fn decode(status: u16, body: &[u8]) -> Result<Vec<Series>, SourceError> {
    let answer: Result<Answer, _> = sonic_rs::from_slice(body);
    if !(200..300).contains(&status) {
        let detail = match &answer {
            Ok(Answer { error: Some(e), .. }) => e.clone(),
            _ => String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned(),
        };
        return Err(SourceError::Server(format!("HTTP {status}: {detail}")));
    }
    let answer = answer.map_err(|e| SourceError::Decode(e.to_string()))?;
    if let Some(e) = answer.error {
        return Err(SourceError::Server(e));
    }
    let mut out = Vec::new();
    for result in answer.results {
        if let Some(e) = result.error {
            return Err(SourceError::Server(e));
        }
        // Without chunking, `partial` means the server cut the answer at its max-row-limit:
        // deciding on part of the data would be wrong, so say so.
        if result.partial {
            return Err(SourceError::Server(
                "the result was truncated (max-row-limit): narrow the range or aggregate".into(),
            ));
        }
        if out.is_empty() {
            out = result.series;
        } else {
            out.extend(result.series);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_series_tags_nulls_and_times() {
        let body = br#"{"results":[{"statement_id":0,"series":[
            {"name":"cpu","tags":{"host":"a"},"columns":["time","value","n"],
             "values":[[1000,12.5,null],[2000,3,"x"]]},
            {"name":"cpu","columns":["time","value"],"values":[[5,true]]}]}]}"#;
        let got = decode(200, body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].tags["host"], "a");
        assert_eq!(*got[0].columns, ["value", "n"]);
        assert_eq!(
            got[0].rows[1],
            Row {
                time: 2000,
                // Integral as written; query() makes it a float unless the field is an integer.
                values: vec![Some(Value::Int(3)), Some(Value::Str("x".into()))]
            }
        );
        assert_eq!(got[0].rows[0].values[0], Some(Value::Float(12.5)));
        assert_eq!(got[0].rows[0].values[1], None);
        assert!(got[1].tags.is_empty());
        // Cells straight from the text: integers exactly (also above 2^53), above i64::MAX a
        // float; a time that is not an integer, or a cell that is an array, is an error.
        let got = decode(
            200,
            br#"{"results":[{"series":[{"name":"m","columns":["time","a","b","c"],
            "values":[[1,9007199254740993,18446744073709551615,-2.5e3]]}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            got[0].rows[0].values,
            [
                Some(Value::Int(9007199254740993)),
                Some(Value::Float(18446744073709551615.0)),
                Some(Value::Float(-2500.0))
            ]
        );
        for bad in [
            r#"{"results":[{"series":[{"columns":["time","a"],"values":[[1.5,1]]}]}]}"#,
            r#"{"results":[{"series":[{"columns":["time","a"],"values":[[1,[2]]]}]}]}"#,
            r#"{"results":[{"series":[{"columns":["time","a"],"values":[[1,{"x":1}]]}]}]}"#,
        ] {
            let e = decode(200, bad.as_bytes()).unwrap_err();
            assert!(matches!(e, SourceError::Decode(_)), "{bad}: {e}");
        }
        assert_eq!(
            decode(200, br#"{"results":[{"statement_id":0}]}"#),
            Ok(vec![])
        );
    }

    /// Series with the columns of the series before share its list; any other list (longer,
    /// shorter, different, `time` elsewhere or absent) is read as written, and rows that come
    /// before their columns are split the same way.
    #[test]
    fn column_lists_are_shared_and_rows_split_in_any_order() {
        let got = decode(
            200,
            br#"{"results":[{"series":[
            {"name":"a","columns":["time","value"],"values":[[1,1]]},
            {"name":"a","columns":["time","value"],"values":[[2,2]]},
            {"name":"a","columns":["time","value","x"],"values":[[3,3,"x"]]},
            {"name":"a","columns":["time"],"values":[[4]]},
            {"name":"a","columns":["v","time"],"values":[[5,50]]},
            {"name":"a","values":[[6,60]],"columns":["time","value"]},
            {"name":"a","columns":["time","value"],"extra":{"ignored":[1]},"values":[[7,7]]},
            {"name":"a","columns":["va\u006cue"],"values":[[8]]},
            {"name":"a","values":[[9,90]]}]}]}"#,
        )
        .unwrap();
        let columns: Vec<Vec<&str>> = got
            .iter()
            .map(|s| s.columns.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            columns,
            [
                vec!["value"],
                vec!["value"],
                vec!["value", "x"],
                vec![],
                vec!["v"],
                vec!["value"],
                vec!["value"],
                vec!["value"],
                vec![]
            ]
        );
        assert!(Arc::ptr_eq(&got[0].columns, &got[1].columns));
        assert!(Arc::ptr_eq(&got[5].columns, &got[6].columns));
        let rows: Vec<(i64, Vec<Option<Value>>)> = got
            .iter()
            .flat_map(|s| &s.rows)
            .map(|r| (r.time, r.values.clone()))
            .collect();
        let int = |i| Some(Value::Int(i));
        assert_eq!(
            rows,
            [
                (1, vec![int(1)]),
                (2, vec![int(2)]),
                (3, vec![int(3), Some(Value::Str("x".into()))]),
                (4, vec![]),
                (50, vec![int(5)]),
                (6, vec![int(60)]),
                (7, vec![int(7)]),
                (0, vec![int(8)]),
                // No columns: no time either, every cell a value.
                (0, vec![int(9), int(90)]),
            ]
        );
        // A row without its time cell, before or after the columns.
        for bad in [
            r#"{"results":[{"series":[{"columns":["time","a"],"values":[[]]}]}]}"#,
            r#"{"results":[{"series":[{"values":[[]],"columns":["time","a"]}]}]}"#,
            r#"{"results":[{"series":[{"values":[[null,1]],"columns":["time","a"]}]}]}"#,
        ] {
            let e = decode(200, bad.as_bytes()).unwrap_err();
            assert!(
                e.to_string().contains("not integer nanoseconds"),
                "{bad}: {e}"
            );
        }
        // `partial` on a series or on the statement.
        for cut in [
            r#"{"results":[{"series":[{"columns":["time"],"values":[[1]],"partial":true}]}]}"#,
            r#"{"results":[{"series":[],"partial":true}]}"#,
        ] {
            let e = decode(200, cut.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("truncated"), "{cut}: {e}");
        }
    }

    #[test]
    fn show_field_keys_gives_the_integer_fields() {
        // `t` was written as an integer in one shard and a float in another: not an integer.
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"net",
            "columns":["fieldKey","fieldType"],
            "values":[["bytes","integer"],["u","unsigned"],["rate","float"],["t","integer"],
                      ["t","float"],["up","boolean"]]}]}]}"#;
        let (known, integers) = field_types(&decode(200, body).unwrap());
        assert_eq!(known.len(), 5);
        assert_eq!(
            integers.into_iter().collect::<Vec<_>>(),
            ["bytes", "u"],
            "{known:?}"
        );
        let mut series = decode(
            200,
            br#"{"results":[{"series":[{"columns":["time","value"],"values":[[1,5],[2,5.5]]}]}]}"#,
        )
        .unwrap();
        to_floats(&mut series);
        assert_eq!(series[0].rows[0].values[0], Some(Value::Float(5.0)));
        assert_eq!(series[0].rows[1].values[0], Some(Value::Float(5.5)));
    }

    #[test]
    fn server_errors_carry_the_message() {
        let e = decode(
            200,
            br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "InfluxDB error: database not found: x");
        let e = decode(
            400,
            br#"{"error":"error parsing query: found EOF, expected FROM"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "InfluxDB error: HTTP 400: error parsing query: found EOF, expected FROM"
        );
        let e = decode(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(e.to_string().contains("HTTP 502: <html>bad gateway"), "{e}");
        let e = decode(200, b"not json").unwrap_err();
        assert!(matches!(e, SourceError::Decode(_)), "{e}");
    }

    #[test]
    fn raw_influxql_must_be_read_only() {
        for ok in [
            "SELECT mean(\"x\") FROM \"cpu\" GROUP BY \"host\"",
            "select 1;",
            "SELECT \"intot\" FROM \"drop\" WHERE host = 'x DROP DATABASE y' -- DELETE\n",
            "SHOW TAG VALUES WITH KEY = \"host\" /* DROP */ ;\n",
            "-- a comment\n/* another */ SELECT v FROM m WHERE h =~ /a-b/",
        ] {
            assert_eq!(check_read_only(ok), Ok(()), "{ok}");
        }
        for bad in [
            "DROP DATABASE telegraf",
            "  drop measurement cpu",
            "SELECT 1; DROP DATABASE x",
            "SELECT * INTO \"other\"..:MEASUREMENT FROM /.*/",
            "select * into x from y",
            "DELETE FROM cpu",
            "CREATE USER a WITH PASSWORD 'b' WITH ALL PRIVILEGES",
            "GRANT ALL TO a",
            "",
            " ; ",
            "select 1; show databases",
            "SELECT \"into\" FROM \"drop\"",
            // Regex literals: InfluxDB's scanner reads `--`, `'` and `;` in them as text.
            "SELECT v FROM m WHERE h =~ /--/; DROP DATABASE telegraf",
            "SELECT * FROM /'/; DROP DATABASE telegraf; SELECT * FROM m WHERE a = '/'",
            "SELECT /'/ INTO \"x\" FROM cpu WHERE a = '/'",
            "SELECT v FROM m WHERE host = 'x' AND h =~ /--/; DROP DATABASE t; SELECT v FROM m WHERE h = ''",
        ] {
            let e = check_read_only(bad).unwrap_err();
            assert!(e.to_string().contains("only read-only"), "{bad}: {e}");
        }
    }

    /// A one-request HTTP server: returns the request head it received, answers `reply`
    /// (or nothing, holding the connection, when `reply` is None).
    fn one_shot(reply: Option<&'static str>) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            match reply {
                Some(body) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        });
        (url, rx)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn source(
        url: String,
        auth: InfluxAuth,
        timeout: Duration,
        rt: &tokio::runtime::Runtime,
    ) -> InfluxDbSource {
        InfluxDbSource::new(
            InfluxDbConfig {
                url,
                database: "tele graf".into(),
                retention_policy: Some("autogen".into()),
                auth,
                timeout,
            },
            rt.handle().clone(),
        )
        .unwrap()
    }

    #[test]
    fn requests_carry_database_epoch_and_credentials() {
        let rt = runtime();
        let ok = r#"{"results":[{"statement_id":0}]}"#;
        let cases = [
            (
                InfluxAuth::Basic {
                    username: "u".into(),
                    password: "p".into(),
                },
                "authorization: Basic dTpw",
            ),
            (InfluxAuth::Token("t0k".into()), "authorization: Token t0k"),
        ];
        for (auth, want) in cases {
            let (url, head) = one_shot(Some(ok));
            let src = source(url, auth, Duration::from_secs(5), &rt);
            let mut q = Query::new("cpu");
            q.field = Some("usage_idle".into());
            assert_eq!(src.query(&q, 60_000_000_000), Ok(vec![]));
            let head = head.recv().unwrap();
            let request_line = head.lines().next().unwrap();
            assert!(request_line.starts_with("GET /query?db=tele+graf&q=SELECT+%22usage_idle%22+AS+%22value%22+FROM+%22autogen%22.%22cpu%22+WHERE+time+%3E+0+AND+time+%3C%3D+60000000000&epoch=ns "), "{request_line}");
            assert!(head.contains(want), "{head}");
        }
    }

    #[test]
    fn a_silent_server_is_a_timeout() {
        let rt = runtime();
        let (url, _head) = one_shot(None);
        let src = source(url, InfluxAuth::None, Duration::from_millis(300), &rt);
        let start = std::time::Instant::now();
        let e = src.influxql("SELECT 1", 0).unwrap_err();
        assert!(matches!(e, SourceError::Timeout { .. }), "{e:?}");
        assert!(
            e.to_string().ends_with("did not answer within 300 ms"),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn unreachable_server_is_a_connect_error() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Port 1 on loopback: nothing listens there.
        let src = InfluxDbSource::new(
            InfluxDbConfig {
                url: "http://127.0.0.1:1".into(),
                database: "db".into(),
                retention_policy: None,
                auth: InfluxAuth::None,
                timeout: Duration::from_secs(2),
            },
            rt.handle().clone(),
        )
        .unwrap();
        let e = src.influxql("SELECT 1", 0).unwrap_err();
        assert!(matches!(e, SourceError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:1 unreachable"), "{e}");
    }
}
