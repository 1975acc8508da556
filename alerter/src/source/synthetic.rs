//! A source that answers every query with plausible data, so `wk-alerter check` can run each
//! rule once without a database: one series per query (tagged `sample` for each group_by tag,
//! and with the value a `where` asks for), a few points of value 1 (an integer for `count`),
//! spread over the query's range. It exists to run the script's code paths (loops over the
//! series, arithmetic on values, the return value), not to predict what fires.

use crate::model::Value;
use crate::query::{Aggregate, Query};
use crate::source::{QuerySource, Row, Series, SourceError};

/// See the module doc.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyntheticSource;

impl QuerySource for SyntheticSource {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        q.validate().map_err(|e| SourceError::Query(e.0))?;
        let mut series = Series {
            measurement: q.measurement.clone(),
            columns: super::value_column(),
            ..Series::default()
        };
        for f in &q.filters {
            if let Some(v) = f.sample_value()
                && q.group_by.contains(&f.tag)
            {
                series.tags.insert(f.tag.clone(), v);
            }
        }
        for m in &q.matches {
            if let crate::query::TagMatch::In { tag, values } = m
                && let Some(v) = values.first()
                && q.group_by.contains(tag)
            {
                series.tags.insert(tag.clone(), v.clone());
            }
        }
        for t in &q.group_by {
            if !series.tags.contains_key(t) {
                series.tags.insert(t.clone(), "sample".to_owned());
            }
        }
        let (start, end) = q.window(now_ns);
        let value = match q.aggregate {
            Aggregate::Count => Value::Int(1),
            _ => Value::Float(1.0),
        };
        let times: Vec<i64> = match q.aggregate {
            Aggregate::Raw | Aggregate::Derivative { .. } => {
                let step = ((end - start) / 3).max(1);
                vec![end - 2 * step, end - step, end]
            }
            _ => vec![end],
        };
        series.rows = times
            .into_iter()
            .map(|time| Row {
                time,
                values: vec![Some(value.clone())],
            })
            .collect();
        Ok(vec![series])
    }

    fn influxql(&self, _text: &str, _now_ns: i64) -> Result<Vec<Series>, SourceError> {
        Err(SourceError::Unsupported(
            "influxql() is not run on synthetic data (give recorded data with --data, or a \
             [[sources.influxdb]])"
                .into(),
        ))
    }
}
