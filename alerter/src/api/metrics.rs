//! `/metrics`: the alerter's own health in Prometheus' text format. The counters are the
//! alerter's self-metrics as [`Metric`]s (the scheduler's `wk_alerter` per rule, the router's,
//! the action engine's, the stream receiver's), each field written as
//! `<measurement>_<field>{tags} value`, as Telegraf's prometheus_client output names them.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use wk_core::metric::{FieldValue, Metric};

use super::Api;

/// A metric or label name with the characters Prometheus does not take replaced by `_`.
fn name(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphanumeric() && !(i == 0 && c.is_ascii_digit()) || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A label value, escaped as the text format wants (`\\`, `\"`, `\n`).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `metrics` in the text format (string fields are left out). The samples of one
/// family (one `<measurement>_<field>` name) are written together under their `# HELP` and
/// `# TYPE` lines, as the format requires, in the order the families first appear. The type is
/// `untyped` (as Telegraf's prometheus_client output writes fields it has no type for): the
/// self-metrics mix counters and gauges, and renaming counters to `_total` would break
/// dashboards built on these names.
pub fn render(metrics: &[Metric]) -> String {
    let mut families: Vec<(String, String, String)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    for m in metrics {
        let tags: Vec<String> = m
            .tags()
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", name(k), label(v)))
            .collect();
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", tags.join(","))
        };
        for (field, value) in &m.fields {
            let v = match value {
                FieldValue::Float(f) => f.to_string(),
                FieldValue::Int(i) => i.to_string(),
                FieldValue::Uint(u) => u.to_string(),
                FieldValue::Bool(b) => u8::from(*b).to_string(),
                FieldValue::Str(_) => continue,
            };
            let family = format!("{}_{}", name(&m.name), name(field));
            let i = *index.entry(family.clone()).or_insert_with(|| {
                let help = format!(
                    "wk-alerter self-metric {}, field {field} (docs/api.md)",
                    m.name
                );
                families.push((family.clone(), help, String::new()));
                families.len() - 1
            });
            let _ = writeln!(families[i].2, "{family}{tags} {v}");
        }
    }
    let mut out = String::new();
    for (family, help, samples) in families {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(
            out,
            "# HELP {family} {help}\n# TYPE {family} untyped\n{samples}"
        );
    }
    out
}

impl Api {
    /// The alerter's self-metrics now.
    pub fn self_metrics(&self, now: i64) -> Vec<Metric> {
        let b = self.board.get();
        let c = b.counts(&self.router, now);
        let mut out: Vec<Metric> = b.self_metrics.values().cloned().collect();
        out.push(
            Metric::new("wk_alerter_alerts", now)
                .with_field("firing", c.firing as u64)
                .with_field("pending", c.pending as u64)
                .with_field("silenced", c.silenced as u64)
                .with_field("inhibited", c.inhibited as u64)
                .with_field("rules", c.rules as u64)
                .with_field("rules_with_problems", c.broken as u64),
        );
        let r = self.router.stats();
        out.push(
            Metric::new("wk_alerter_router", now)
                .with_field("events_received", r.received)
                .with_field("events_silenced", r.silenced)
                .with_field("events_inhibited", r.inhibited)
                .with_field("events_unknown_notifier", r.unknown_notifier),
        );
        for n in &r.notifiers {
            out.push(
                Metric::new("wk_alerter_notifier", now)
                    .with_tag("notifier", n.name.as_str())
                    .with_field("queued", n.queued)
                    .with_field("filtered", n.filtered)
                    .with_field("sent", n.sent)
                    .with_field("failed", n.failed)
                    .with_field("retries", n.retries)
                    .with_field("timeouts", n.timeouts)
                    .with_field("dropped", n.dropped)
                    .with_field("pending", n.pending as u64)
                    .with_field(
                        "failing_seconds",
                        n.failing.as_ref().map_or(0, |f| f.for_.as_secs()),
                    ),
            );
        }
        let results = self.engine.results();
        let mut by_status: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for a in &results {
            let e = by_status.entry(a.status.as_str()).or_default();
            e.0 += 1;
            e.1 += u64::from(a.recovered);
        }
        for (status, (n, recovered)) in by_status {
            out.push(
                Metric::new("wk_alerter_actions", now)
                    .with_tag("status", status)
                    .with_field("recent", n)
                    .with_field("recovered", recovered),
            );
        }
        if let Some(h) = &b.heartbeat {
            out.push(
                Metric::new("wk_alerter_heartbeat", now)
                    .with_field("withheld", u64::from(h.state == "withheld"))
                    .with_field("failing", u64::from(h.state == "failing")),
            );
        }
        if let Some(s) = self.stream_stats.get() {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            out.push(
                Metric::new("wk_alerter_stream", now)
                    .with_field("writes", get(&s.writes))
                    .with_field("points", get(&s.points))
                    .with_field("rejected_lines", get(&s.rejected_lines))
                    .with_field("unauthorized", get(&s.unauthorized))
                    .with_field("future_points", get(&s.future_points))
                    .with_field("body_bytes", get(&s.body_bytes)),
            );
        }
        out
    }

    /// `/metrics`.
    pub(super) fn metrics(&self, now: i64) -> String {
        render(&self.self_metrics(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_labels_and_values() {
        let m = Metric::new("wk_alerter", 0)
            .with_tag("rule", "cpu \"x\"\\")
            .with_field("evaluations", 3u64)
            .with_field("evaluation_failures_bad-return", 1u64)
            .with_field("status", "ok")
            .with_field("up", true);
        let other = Metric::new("wk_alerter", 0)
            .with_tag("rule", "mem")
            .with_field("evaluations", 5u64);
        assert_eq!(
            render(&[m, other]),
            "# HELP wk_alerter_evaluations wk-alerter self-metric wk_alerter, field evaluations (docs/api.md)\n\
             # TYPE wk_alerter_evaluations untyped\n\
             wk_alerter_evaluations{rule=\"cpu \\\"x\\\"\\\\\"} 3\n\
             wk_alerter_evaluations{rule=\"mem\"} 5\n\
             # HELP wk_alerter_evaluation_failures_bad_return wk-alerter self-metric wk_alerter, field evaluation_failures_bad-return (docs/api.md)\n\
             # TYPE wk_alerter_evaluation_failures_bad_return untyped\n\
             wk_alerter_evaluation_failures_bad_return{rule=\"cpu \\\"x\\\"\\\\\"} 1\n\
             # HELP wk_alerter_up wk-alerter self-metric wk_alerter, field up (docs/api.md)\n\
             # TYPE wk_alerter_up untyped\n\
             wk_alerter_up{rule=\"cpu \\\"x\\\"\\\\\"} 1\n"
        );
    }
}
