//! The `Series` type scripts see: one result series with its value, the values a rule adds for
//! templates (`s.set`) and the level conditions it sets (`s.warn(..)`).
//!
//! Rhai's `for s in array` iterates over copies, so a series is a shared handle: `s.warn(..)`
//! inside the loop changes the series the array holds and `check()` returns.

use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{Array, Dynamic, Map};

use crate::model::{Condition, LevelConditions, Observation, Value};
use crate::source::Series;

/// What a series holds; behind [`ScriptSeries`]' lock.
#[derive(Debug, Clone, Default)]
pub struct SeriesData {
    pub measurement: String,
    /// The queried field (empty for raw InfluxQL), shared by the series of one answer.
    pub field: std::sync::Arc<str>,
    pub tags: crate::model::Tags,
    /// Result columns (without time; shared with the other series of the answer) and rows,
    /// oldest first.
    pub columns: std::sync::Arc<[String]>,
    pub rows: Vec<crate::source::Row>,
    /// `s.value`: the first column of the last row until the script sets it.
    pub value: Option<Value>,
    /// Time of the last row (ns), 0 without rows.
    pub time: i64,
    /// The aggregate whose rows are stamped with the evaluation time rather than a point's
    /// (`mean`, `sum`, `count`): `s.age()` has no point to measure from then.
    pub stamped_by: Option<&'static str>,
    /// Values set with `s.set(name, v)`.
    pub extra: crate::model::Fields,
    pub levels: LevelConditions,
}

/// A shared handle to one series (the script type `Series`).
#[derive(Debug, Clone, Default)]
pub struct ScriptSeries(Arc<Mutex<SeriesData>>);

impl ScriptSeries {
    /// A handle over a source's result series; `stamped_by` names the aggregate if its rows
    /// carry the evaluation time instead of a point's time.
    pub fn from_source(
        s: Series,
        field: &std::sync::Arc<str>,
        stamped_by: Option<&'static str>,
    ) -> ScriptSeries {
        let last = s.rows.last();
        let value = last.and_then(|r| r.values.first().cloned().flatten());
        let time = last.map_or(0, |r| r.time);
        ScriptSeries(Arc::new(Mutex::new(SeriesData {
            measurement: s.measurement,
            field: field.clone(),
            tags: s.tags,
            columns: s.columns,
            rows: s.rows,
            value,
            time,
            stamped_by,
            extra: crate::model::Fields::new(),
            levels: LevelConditions::default(),
        })))
    }

    /// Locks the data; a poisoned lock (a panic elsewhere) still holds usable data.
    pub fn lock(&self) -> MutexGuard<'_, SeriesData> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the state machine gets: tags, measurement, fields (the last row's columns, then
    /// `value`, then what `s.set` added), time and the level conditions. The data is moved
    /// out when this is the last handle (the usual case once `check()` has returned), so no
    /// tag map or string is copied then.
    pub fn into_observation(self) -> Observation {
        match Arc::try_unwrap(self.0) {
            Ok(m) => Self::observe(m.into_inner().unwrap_or_else(|e| e.into_inner())),
            Err(shared) => {
                let d = shared.lock().unwrap_or_else(|e| e.into_inner());
                Self::observe(SeriesData {
                    measurement: d.measurement.clone(),
                    tags: d.tags.clone(),
                    columns: d.columns.clone(),
                    rows: d.rows.last().cloned().into_iter().collect(),
                    value: d.value.clone(),
                    extra: d.extra.clone(),
                    field: d.field.clone(),
                    ..*d
                })
            }
        }
    }

    fn observe(d: SeriesData) -> Observation {
        // Room for the columns, `value` and what the script set: one allocation.
        let mut fields = crate::model::Fields::with_capacity(d.columns.len() + 1 + d.extra.len());
        if let Some(row) = d.rows.into_iter().next_back() {
            for (c, v) in d.columns.iter().zip(row.values) {
                if let Some(v) = v {
                    fields.insert(c.clone(), v);
                }
            }
        }
        match (d.value, fields.get_mut("value")) {
            (Some(v), Some(slot)) => *slot = v,
            (Some(v), None) => {
                fields.insert("value".to_owned(), v);
            }
            (None, _) => {
                fields.remove("value");
            }
        }
        fields.extend(d.extra);
        Observation {
            tags: d.tags,
            measurement: d.measurement,
            fields,
            time: d.time,
            levels: d.levels,
        }
    }
}

/// A model value as a script value (`()` for null).
pub fn to_dynamic(v: Option<&Value>) -> Dynamic {
    match v {
        None => Dynamic::UNIT,
        Some(Value::Float(f)) => Dynamic::from_float(*f),
        Some(Value::Int(i)) => Dynamic::from_int(*i),
        Some(Value::Bool(b)) => Dynamic::from_bool(*b),
        Some(Value::Str(s)) => Dynamic::from(s.clone()),
    }
}

/// A script value as a model value; only numbers, booleans and strings are allowed.
pub fn from_dynamic(v: &Dynamic) -> Result<Value, String> {
    if let Ok(f) = v.as_float() {
        Ok(Value::Float(f))
    } else if let Ok(i) = v.as_int() {
        Ok(Value::Int(i))
    } else if let Ok(b) = v.as_bool() {
        Ok(Value::Bool(b))
    } else if v.is_string() {
        Ok(Value::Str(v.clone().into_string().unwrap_or_default()))
    } else {
        Err(format!(
            "expected a number, boolean or string, got {}",
            v.type_name()
        ))
    }
}

/// Registers the `Series` type and its members on an engine.
pub fn register(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<ScriptSeries>("Series");
    engine.register_get_set(
        "value",
        |s: &mut ScriptSeries| to_dynamic(s.lock().value.as_ref()),
        |s: &mut ScriptSeries, v: Dynamic| -> Result<(), Box<rhai::EvalAltResult>> {
            let v = from_dynamic(&v).map_err(|m| format!("s.value = ...: {m}"))?;
            s.lock().value = Some(v);
            Ok(())
        },
    );
    engine.register_get("values", |s: &mut ScriptSeries| -> Array {
        s.lock()
            .rows
            .iter()
            .map(|r| to_dynamic(r.values.first().and_then(Option::as_ref)))
            .collect()
    });
    engine.register_get("time", |s: &mut ScriptSeries| s.lock().time);
    engine.register_get("measurement", |s: &mut ScriptSeries| {
        s.lock().measurement.clone()
    });
    engine.register_get("field", |s: &mut ScriptSeries| s.lock().field.to_string());
    engine.register_get("tags", |s: &mut ScriptSeries| -> Map {
        s.lock()
            .tags
            .iter()
            .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
            .collect()
    });
    engine.register_fn("tag", |s: &mut ScriptSeries, k: &str| -> String {
        s.lock().tags.get(k).cloned().unwrap_or_default()
    });
    engine.register_fn(
        "set",
        |s: &mut ScriptSeries, k: &str, v: Dynamic| -> Result<(), Box<rhai::EvalAltResult>> {
            if k.is_empty() {
                return Err("s.set(name, v): the name is empty".into());
            }
            let v = from_dynamic(&v).map_err(|m| format!("s.set({k:?}, v): {m}"))?;
            s.lock().extra.insert(k.to_owned(), v);
            Ok(())
        },
    );
    // get(name): a value set with s.set, else a column of the last row; () when absent.
    engine.register_fn("get", |s: &mut ScriptSeries, k: &str| -> Dynamic {
        let d = s.lock();
        if let Some(v) = d.extra.get(k) {
            return to_dynamic(Some(v));
        }
        if k == "value" {
            return to_dynamic(d.value.as_ref());
        }
        let col = d.columns.iter().position(|c| c == k);
        to_dynamic(
            col.and_then(|i| d.rows.last().and_then(|r| r.values.get(i)))
                .and_then(Option::as_ref),
        )
    });
    type Slot = fn(&mut LevelConditions) -> &mut Option<Condition>;
    let slots: [(&str, Slot); 3] = [
        ("info", |l| &mut l.info),
        ("warn", |l| &mut l.warn),
        ("crit", |l| &mut l.crit),
    ];
    for (name, slot) in slots {
        engine.register_fn(name, move |s: &mut ScriptSeries, matched: bool| {
            *slot(&mut s.lock().levels) = Some(Condition {
                matched,
                reset: None,
            });
        });
        engine.register_fn(
            name,
            move |s: &mut ScriptSeries, matched: bool, reset: bool| {
                *slot(&mut s.lock().levels) = Some(Condition {
                    matched,
                    reset: Some(reset),
                });
            },
        );
    }
    // The threshold shortcut: warn and crit from two thresholds, with an optional hysteresis
    // (Kapacitor's warnReset/critReset at `threshold - hysteresis`).
    for (name, above) in [("above", true), ("below", false)] {
        engine.register_fn(
            name,
            move |s: &mut ScriptSeries, warn: Dynamic, crit: Dynamic| {
                thresholds(s, above, &warn, &crit, None)
            },
        );
        engine.register_fn(
            name,
            move |s: &mut ScriptSeries, warn: Dynamic, crit: Dynamic, hysteresis: Dynamic| {
                thresholds(s, above, &warn, &crit, Some(&hysteresis))
            },
        );
    }
    engine.register_fn("to_string", |s: &mut ScriptSeries| describe(s));
    engine.register_fn("to_debug", |s: &mut ScriptSeries| describe(s));
}

/// `s.above(warn, crit[, hysteresis])` (`above` false: `s.below`): sets the warn and crit
/// conditions from `s.value`. A threshold of `()` leaves that level alone; a series without a
/// value (a null) gets no condition, as `s.crit(s.value > x)` cannot be asked of it.
fn thresholds(
    s: &mut ScriptSeries,
    above: bool,
    warn: &Dynamic,
    crit: &Dynamic,
    hysteresis: Option<&Dynamic>,
) -> Result<(), Box<rhai::EvalAltResult>> {
    let call = if above { "s.above" } else { "s.below" };
    let number = |what: &str, v: &Dynamic| -> Result<Option<f64>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        let n = v
            .as_float()
            .ok()
            .or_else(|| v.as_int().ok().map(|i| i as f64))
            .filter(|f| f.is_finite());
        n.map(Some).ok_or_else(|| {
            format!(
                "{call}(warn, crit[, hysteresis]): {what} must be a number or () (no such \
                 level), got {}",
                type_name(v)
            )
        })
    };
    let warn = number("warn", warn)?;
    let crit = number("crit", crit)?;
    let hysteresis = match hysteresis {
        None => None,
        Some(h) => match number("hysteresis", h)? {
            Some(h) if h >= 0.0 => Some(h),
            _ => {
                return Err(format!(
                    "{call}(warn, crit, hysteresis): hysteresis must be a number >= 0, got {}",
                    h
                )
                .into());
            }
        },
    };
    if warn.is_none() && crit.is_none() {
        return Err(format!("{call}((), ()): give a warn or a crit threshold").into());
    }
    if let (Some(w), Some(c)) = (warn, crit)
        && ((above && w > c) || (!above && w < c))
    {
        let order = if above { "above" } else { "below" };
        return Err(format!(
            "{call}({w}, {c}): the warn threshold must not be {order} the crit one (warn first)"
        )
        .into());
    }
    let mut d = s.lock();
    let v = match &d.value {
        None => return Ok(()),
        Some(Value::Float(f)) => *f,
        Some(Value::Int(i)) => *i as f64,
        Some(other) => {
            let t = match other {
                Value::Bool(_) => "a boolean",
                _ => "a string",
            };
            return Err(format!("{call}(): s.value is {t}, not a number").into());
        }
    };
    let condition = |t: f64| Condition {
        matched: if above { v > t } else { v < t },
        reset: hysteresis.map(|h| if above { v < t - h } else { v > t + h }),
    };
    if let Some(w) = warn {
        d.levels.warn = Some(condition(w));
    }
    if let Some(c) = crit {
        d.levels.crit = Some(condition(c));
    }
    Ok(())
}

fn type_name(v: &Dynamic) -> String {
    if v.is_string() {
        "a string".to_owned()
    } else if v.is_bool() {
        "a boolean".to_owned()
    } else {
        v.type_name().to_owned()
    }
}

fn describe(s: &ScriptSeries) -> String {
    let d = s.lock();
    let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let value = match &d.value {
        None => "()".to_owned(),
        Some(Value::Float(f)) => f.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Str(s)) => format!("{s:?}"),
    };
    format!(
        "Series({}{}{} value={value} time={})",
        d.measurement,
        if tags.is_empty() { "" } else { "," },
        tags.join(","),
        d.time
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series without a value (a null from InfluxDB) gets no condition from the shortcut:
    /// "no data" is NoData's business, not a threshold's.
    #[test]
    fn thresholds_on_a_null_value_set_nothing() {
        let mut s = ScriptSeries::default();
        let n = |v: i64| Dynamic::from_int(v);
        thresholds(&mut s, true, &n(80), &n(90), Some(&n(5))).unwrap();
        assert_eq!(s.lock().levels, LevelConditions::default());
        s.lock().value = Some(Value::Int(85));
        thresholds(&mut s, true, &n(80), &n(90), Some(&n(5))).unwrap();
        let l = s.lock().levels;
        assert_eq!(
            (l.warn, l.crit),
            (
                Some(Condition {
                    matched: true,
                    reset: Some(false)
                }),
                Some(Condition {
                    matched: false,
                    reset: Some(false)
                })
            )
        );
    }
}
