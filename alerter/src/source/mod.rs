//! Where rule queries go: InfluxDB over InfluxQL ([`influxdb`]), VictoriaMetrics over
//! MetricsQL ([`victoriametrics`]) or points held in memory ([`memory`]: recorded line
//! protocol, and the stream window of `crate::stream`). All answer the same [`Query`] with the
//! same semantics (see `crate::query`), so a rule runs unchanged on any of them.
//!
//! The trait is synchronous because Rhai calls it from inside script evaluation; the caller
//! runs evaluations on a blocking thread (tokio's blocking pool).

mod http;
pub mod influxdb;
pub mod memory;
pub mod synthetic;
pub mod victoriametrics;

use crate::model::Value;
use crate::query::Query;

pub use influxdb::{InfluxAuth, InfluxDbConfig, InfluxDbSource};
pub use memory::MemorySource;
pub use synthetic::SyntheticSource;
pub use victoriametrics::{VictoriaMetricsConfig, VictoriaMetricsSource};

/// A data source a rule can query.
pub trait QuerySource: Send + Sync {
    /// Runs a query built by a rule, evaluated at `now_ns` (ns since the epoch).
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError>;
    /// Runs raw InfluxQL (query mode only).
    fn influxql(&self, text: &str, now_ns: i64) -> Result<Vec<Series>, SourceError>;
}

/// One result series: the group's tags and its rows. Rows from [`QuerySource::query`] have
/// one column, `value`; raw InfluxQL may return several.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub measurement: String,
    /// The group's tags; tags with empty values (a group_by tag the series lacks) are left out.
    pub tags: crate::model::Tags,
    /// Column names without `time`, shared by the series of one answer that have the same.
    pub columns: std::sync::Arc<[String]>,
    /// Rows oldest first: (time in ns, one value per column; `None` = null).
    pub rows: Vec<Row>,
}

impl Series {
    /// The one-column (`value`) series of a query's group: `key` holds the group's tag values
    /// in `group_by` order; empty ones (a tag the series lacks) are left out.
    pub fn of_group(q: &crate::query::Query, key: Vec<String>, rows: Vec<Row>) -> Series {
        let tags = q
            .group_by
            .iter()
            .zip(key)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v))
            .collect();
        Series {
            measurement: q.measurement.clone(),
            tags,
            columns: value_column(),
            rows,
        }
    }
}

/// `["value"]`, the columns of every series [`QuerySource::query`] gives: one list for all.
pub fn value_column() -> std::sync::Arc<[String]> {
    static COLUMNS: std::sync::LazyLock<std::sync::Arc<[String]>> =
        std::sync::LazyLock::new(|| [crate::query::VALUE_COLUMN.to_owned()].into());
    COLUMNS.clone()
}

/// One row of a [`Series`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub time: i64,
    pub values: Vec<Option<Value>>,
}

/// Why a query failed. The message is what the rule's Error state reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// The query itself is invalid (rejected before it was sent).
    #[error("{0}")]
    Query(String),
    /// The source cannot run this kind of query (e.g. influxql() over recorded data).
    #[error("{0}")]
    Unsupported(String),
    /// Could not reach the server (connection refused, DNS, TLS).
    #[error("{engine} at {url} unreachable: {message}")]
    Connect {
        engine: &'static str,
        url: String,
        message: String,
    },
    /// No answer within the configured timeout.
    #[error("{engine} at {url} did not answer within {timeout_ms} ms")]
    Timeout {
        engine: &'static str,
        url: String,
        timeout_ms: u128,
    },
    /// The server answered with an error (HTTP status or an `error` in the JSON).
    #[error("InfluxDB error: {0}")]
    Server(String),
    /// The answer was not what InfluxDB sends.
    #[error("cannot decode InfluxDB answer: {0}")]
    Decode(String),
    /// A field of a type the aggregate cannot use (e.g. mean of a string).
    #[error("{0}")]
    Type(String),
    /// VictoriaMetrics answered with an error, or with something it does not send.
    #[error("VictoriaMetrics error: {0}")]
    Victoria(String),
}

/// A value as a float when it is a number (ints widen; bools and strings are not numbers).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::Bool(_) | Value::Str(_) => None,
    }
}
