//! `[[notifiers.influxdb]]`: writes each event back to InfluxDB as a line-protocol point
//! (measurement `alerts` by default), so Grafana can show alerts next to the metrics
//! (annotations, state timelines). Kapacitor does the same with `|influxDBOut()` after an
//! alert node.

use std::time::{SystemTime, UNIX_EPOCH};

use wk_core::lineproto::Serializer;
use wk_core::metric::{FieldValue, Metric};
use wk_core::options::Options;

use super::{Notifier, NotifierSpec, NotifyError, SendFuture, UrlError, http_url, secret};
use crate::model::{AlertEvent, Value};
use crate::template::kind_str;

/// Registry entry.
pub const SPEC: NotifierSpec = NotifierSpec {
    name: "influxdb",
    description: "Write each event back to InfluxDB (v1 /write) as a point in the `alerts` measurement",
    sample_config: include_str!("sample.conf"),
    build,
};

/// Field names this notifier writes itself; event fields with these names are left out.
const OWN_FIELDS: &[&str] = &["message", "details", "previous_level", "duration_ns"];

/// The InfluxDB notifier.
pub struct InfluxNotifier {
    client: reqwest::Client,
    write_url: reqwest::Url,
    measurement: String,
    username: Option<String>,
    password: Option<String>,
}

fn build(opts: &mut Options<'_, '_>) -> Box<dyn Notifier> {
    let url_text = opts.string("url", "http://127.0.0.1:8086");
    let database = opts.string("database", "telegraf");
    if database.is_empty() {
        opts.error_at("database", "must not be empty");
    }
    let rp = opts.opt_string("retention_policy");
    let measurement = opts.string("measurement", "alerts");
    if measurement.is_empty() {
        opts.error_at("measurement", "must not be empty");
    }
    let username = opts.opt_string("username");
    let password = secret::read(opts, "password", "password_file");
    let write_url = write_url(&url_text, &database, rp.as_deref().unwrap_or_default());
    let write_url = super::url_option(opts, "url", write_url);
    let client = super::http_client(opts);
    Box::new(InfluxNotifier {
        client,
        write_url,
        measurement,
        username,
        password,
    })
}

/// InfluxDB's v1 write endpoint under `base`: `<base>/write?db=…[&rp=…]&precision=ns` (also
/// where the action recorder writes `wk_actions`).
pub fn write_url(base: &str, database: &str, rp: &str) -> Result<reqwest::Url, UrlError> {
    let mut u = http_url(base)?;
    let path = format!("{}/write", u.path().trim_end_matches('/'));
    u.set_path(&path);
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("db", database);
        if !rp.is_empty() {
            q.append_pair("rp", rp);
        }
        q.append_pair("precision", "ns");
    }
    Ok(u)
}

/// The point written for `event`: tags `rule`, `id`, `level`, `kind` over the event's own
/// tags (ours win a clash); fields `message`, `details` (when not empty), `previous_level`,
/// `duration_ns` and the event's fields, numbers written as floats so that one rule's
/// integer `value` cannot clash with another's float in the shared measurement.
pub fn point(measurement: &str, event: &AlertEvent) -> Metric {
    let time = if event.time != 0 {
        event.time
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    let mut m = Metric::new(measurement.to_owned(), time);
    for (k, v) in &event.tags {
        m.set_tag(k.clone(), v.clone());
    }
    m.set_tag("rule", event.rule.clone());
    m.set_tag("id", event.id.clone());
    m.set_tag("level", event.level.as_str());
    m.set_tag("kind", kind_str(event.kind));
    m.add_field("message", event.message.clone());
    if !event.details.is_empty() {
        m.add_field("details", event.details.clone());
    }
    m.add_field("previous_level", event.previous_level.as_str());
    m.add_field(
        "duration_ns",
        i64::try_from(event.duration.as_nanos()).unwrap_or(i64::MAX),
    );
    for (k, v) in &event.fields {
        if OWN_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let v = match v {
            Value::Float(f) => FieldValue::Float(*f),
            Value::Int(i) => FieldValue::Float(*i as f64),
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Str(s) => FieldValue::Str(s.clone()),
        };
        m.add_field(k.clone(), v);
    }
    m
}

impl InfluxNotifier {
    async fn write(&self, event: &AlertEvent) -> Result<(), NotifyError> {
        let body = Serializer::default().serialize(&[point(&self.measurement, event)]);
        let mut req = self.client.post(self.write_url.clone()).body(body);
        if let Some(u) = &self.username {
            req = req.basic_auth(u, self.password.as_ref());
        }
        super::http_verdict(req.send().await, "InfluxDB write", 300).await
    }
}

impl Notifier for InfluxNotifier {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(self.write(event))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Level;

    #[test]
    fn point_has_our_tags_over_the_events_and_float_values() {
        let e = AlertEvent {
            rule: "cpu_high".into(),
            id: "cpu_high:host=web1".into(),
            message: "web1 \"hot\"".into(),
            level: Level::Critical,
            tags: [
                ("host".to_owned(), "web 1".to_owned()),
                ("level".to_owned(), "spoofed".to_owned()),
            ]
            .into(),
            fields: [
                ("value".to_owned(), Value::Int(93)),
                ("message".to_owned(), Value::Str("clash".into())),
            ]
            .into(),
            time: 1_700_000_000_000_000_000,
            duration: Duration::from_secs(65),
            ..Default::default()
        };
        let line =
            String::from_utf8(Serializer::default().serialize(&[point("alerts", &e)])).unwrap();
        assert_eq!(
            line,
            "alerts,host=web\\ 1,id=cpu_high:host\\=web1,kind=alert,level=CRITICAL,rule=cpu_high \
             message=\"web1 \\\"hot\\\"\",previous_level=\"OK\",duration_ns=65000000000i,value=93 \
             1700000000000000000\n"
        );
    }
}
