//! `wk_actions`: one InfluxDB point per action result, written straight to InfluxDB (line
//! protocol through `wk_core::lineproto`, the v1 `/write` API with the alerter's reqwest
//! client) — not through a notifier, so silences and inhibition, which decide what people
//! are told, never drop the record of what the alerter did. The audit log is the other
//! record (`audit.rs`).
//!
//! Where: `[actions] record_url`/`record_database`, else the `[[sources.influxdb]]` the
//! rules query (its URL, database and credentials); `record_influxdb = false` turns it off.
//! The schema is in `README.md` ("wk_actions").

use std::time::Duration;

use tracing::{debug, warn};
use wk_core::lineproto::Serializer;
use wk_core::metric::Metric;

use super::ActionResult;
use crate::notify::UrlError;

/// Where the points go (resolved from `[actions]` and the source by the config loader).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordTarget {
    /// The server's base URL (`http://127.0.0.1:8086`).
    pub url: String,
    pub database: String,
    pub retention_policy: String,
    pub measurement: String,
    pub username: String,
    pub password: String,
    /// `Authorization: Token …` (InfluxDB 2.x/3.x), instead of username/password.
    pub token: String,
}

impl RecordTarget {
    /// `<url>/write?db=…&precision=ns`.
    pub fn write_url(&self) -> Result<reqwest::Url, UrlError> {
        crate::notify::influxdb::write_url(&self.url, &self.database, &self.retention_policy)
    }
}

/// The `result` tag: what happened, in one word.
pub fn result_word(r: &ActionResult) -> String {
    match r.status.as_str() {
        "ran" if r.recovered => "recovered".into(),
        "ran" => "not_recovered".into(),
        s => s.to_owned(),
    }
}

/// The point for one result: tags `rule`, `host`, `action`, `target` (the rendered
/// arguments), `result`; fields `recovered`, `attempt`, `max_attempts`, `exit_code` (-1: none),
/// `detection_ms`, `action_ms`, `recovery_ms` (from the fault), `duration_ms` (the action
/// itself), `message`, `found`, `did`, `after`.
pub fn point(measurement: &str, r: &ActionResult, now_ns: i64) -> Metric {
    let ms = |a: i64, b: i64| {
        if a > 0 && b > 0 {
            (b - a).max(0) / 1_000_000
        } else {
            0
        }
    };
    let time = if r.finished_ns > 0 {
        r.finished_ns
    } else {
        now_ns
    };
    let mut m = Metric::new(measurement.to_owned(), time);
    for (k, v) in [
        ("rule", &r.rule),
        ("host", &r.host),
        ("action", &r.action),
        ("target", &r.args),
    ] {
        if !v.is_empty() {
            m.set_tag(k, v.clone());
        }
    }
    m.set_tag("result", result_word(r));
    m.add_field("recovered", r.recovered);
    m.add_field("attempt", i64::from(r.attempt));
    m.add_field("max_attempts", i64::from(r.max_attempts));
    m.add_field("exit_code", r.exit_status.map_or(-1, i64::from));
    m.add_field("detection_ms", ms(r.fault_ns, r.detected_ns));
    m.add_field("action_ms", ms(r.fault_ns, r.started_ns));
    m.add_field("recovery_ms", ms(r.fault_ns, r.verified_ns));
    m.add_field("duration_ms", ms(r.started_ns, r.finished_ns));
    m.add_field("message", super::engine::summary_line(r));
    for (k, v) in r.findings() {
        m.add_field(k, crate::notify::text::truncate(v, 4096));
    }
    m
}

/// Writes results to the [`RecordTarget`], each in its own task (never delaying the engine),
/// retried twice on a network error or a 5xx/429.
#[derive(Clone)]
pub struct Recorder {
    client: reqwest::Client,
    write_url: reqwest::Url,
    target: RecordTarget,
}

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

impl Recorder {
    /// A recorder, or why not (bad URL, client set-up).
    pub fn new(target: RecordTarget) -> Result<Recorder, String> {
        let write_url = target.write_url().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("wk-alerter/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Recorder {
            client,
            write_url,
            target,
        })
    }

    /// Queues the write of `r`'s point; must be called inside a tokio runtime.
    pub fn write(&self, r: &ActionResult, now_ns: i64) {
        let body = Serializer::default().serialize(&[point(&self.target.measurement, r, now_ns)]);
        let me = self.clone();
        let what = format!("{}({}) of {}", r.action, r.args, r.rule);
        tokio::spawn(async move {
            for attempt in 1..=ATTEMPTS {
                match me.post(body.clone()).await {
                    Ok(()) => {
                        debug!("wk_actions point written for {what}");
                        return;
                    }
                    Err((retry, e)) if retry && attempt < ATTEMPTS => {
                        debug!("wk_actions write failed ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    }
                    Err((_, e)) => {
                        warn!("cannot record {what} in InfluxDB ({}): {e}", me.target.url);
                        return;
                    }
                }
            }
        });
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), (bool, String)> {
        let mut req = self.client.post(self.write_url.clone()).body(body);
        if !self.target.token.is_empty() {
            req = req.header("Authorization", format!("Token {}", self.target.token));
        } else if !self.target.username.is_empty() {
            req = req.basic_auth(&self.target.username, Some(&self.target.password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (true, wk_core::diag::error_chain(&e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let retry = status.is_server_error() || status.as_u16() == 429;
        Err((
            retry,
            format!(
                "HTTP {status}: {}",
                crate::notify::text::truncate(text.trim(), 300)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_result_with_the_documented_schema() {
        let r = ActionResult {
            rule: "web down".into(),
            alert_id: "web:host=web1".into(),
            action: "free_port".into(),
            args: "port=8080".into(),
            host: "web1".into(),
            status: "ran".into(),
            before: "port 8080 held by pid 42".into(),
            did: "stopped pid 42".into(),
            recovered: true,
            exit_status: None,
            attempt: 1,
            max_attempts: 3,
            fault_ns: 1_000_000_000,
            detected_ns: 3_000_000_000,
            started_ns: 4_000_000_000,
            finished_ns: 4_500_000_000,
            verified_ns: 9_000_000_000,
            ..ActionResult::default()
        };
        let line =
            String::from_utf8(Serializer::default().serialize(&[point("wk_actions", &r, 0)]))
                .unwrap();
        assert_eq!(
            line,
            "wk_actions,action=free_port,host=web1,result=recovered,rule=web\\ down,target=port\\=8080 \
             recovered=true,attempt=1i,max_attempts=3i,exit_code=-1i,detection_ms=2000i,action_ms=3000i,\
             recovery_ms=8000i,duration_ms=500i,message=\"web1: free_port(port=8080) recovered\",\
             found=\"port 8080 held by pid 42\",did=\"stopped pid 42\" 4500000000\n"
        );
    }

    #[test]
    fn the_write_url_names_the_database() {
        let t = RecordTarget {
            url: "http://127.0.0.1:8086/".into(),
            database: "wk".into(),
            measurement: "wk_actions".into(),
            ..Default::default()
        };
        assert_eq!(
            t.write_url().unwrap().as_str(),
            "http://127.0.0.1:8086/write?db=wk&precision=ns"
        );
    }
}

/// The database the rules query (`[[sources.influxdb]]`), as the recorder needs it: passed in
/// by the config loader so that actions do not depend on the config module.
#[derive(Debug, Clone, Default)]
pub struct SourceDb {
    pub url: String,
    pub database: String,
    pub retention_policy: String,
    pub username: String,
    pub password: String,
    pub token: String,
}
