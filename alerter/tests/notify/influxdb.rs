//! The influxdb notifier writing events back to a real InfluxDB 1.x (Debian's `influxdb`),
//! read back with InfluxQL.

use std::time::Duration;

use serde_json::{Value as Json, json};
use wk_alerter::model::{EventKind, Level, Value};
use wk_alerter::notify::Router;

use super::support::{event, free_port, plan, require, to, wait_port};

struct Influx {
    _dir: tempfile::TempDir,
    _process: tokio::process::Child,
    port: u16,
}

impl Influx {
    async fn start() -> Option<Influx> {
        if !require("/usr/bin/influxd", "Debian's influxdb package") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (port, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n"
        );
        let path = dir.path().join("influxdb.conf");
        std::fs::write(&path, conf).unwrap();
        let process = tokio::process::Command::new("/usr/bin/influxd")
            .arg("-config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start influxd");
        wait_port(port, Duration::from_secs(30)).await;
        Some(Influx {
            _dir: dir,
            _process: process,
            port,
        })
    }

    async fn query(&self, q: &str) -> Json {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/query", self.port))
            .query(&[("q", q), ("db", "wk"), ("epoch", "ns")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn events_are_written_back_as_points_grafana_can_query() {
    let Some(db) = Influx::start().await else {
        return;
    };
    // /ping answers before the meta store is ready for DDL on some runs: retry briefly.
    let mut created = false;
    for _ in 0..100 {
        let r = db.query("CREATE DATABASE wk").await;
        if r["results"][0].get("error").is_none() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "CREATE DATABASE failed");

    let router = Router::start(plan(&format!(
        "[[notifiers.influxdb]]\nname = \"db\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"wk\"\n",
        db.port
    )));
    let mut alert = to(
        event("cpu", "web 1", EventKind::Alert, Level::Critical),
        &["db"],
    );
    alert.fields.insert("cores".into(), Value::Int(8));
    let mut rec = to(
        event("cpu", "web 1", EventKind::Recovery, Level::Ok),
        &["db"],
    );
    rec.time += 60_000_000_000;
    rec.details = String::new();
    router.dispatch(vec![alert, rec]);
    router.flush().await;
    assert_eq!(router.stats().notifier("db").unwrap().sent, 2);

    let r = db
        .query("SELECT time, rule, id, level, kind, host, message, previous_level, duration_ns, value, cores FROM alerts")
        .await;
    let series = &r["results"][0]["series"][0];
    assert_eq!(series["name"], "alerts", "{r}");
    assert_eq!(
        series["values"],
        json!([
            [
                1_795_000_000_000_000_000i64,
                "cpu",
                "cpu:host=web 1",
                "CRITICAL",
                "alert",
                "web 1",
                "web 1: cpu is CRITICAL",
                "OK",
                65_000_000_000i64,
                93.25,
                8
            ],
            [
                1_795_000_060_000_000_000i64,
                "cpu",
                "cpu:host=web 1",
                "OK",
                "recovery",
                "web 1",
                "web 1: cpu is OK",
                "CRITICAL",
                65_000_000_000i64,
                93.25,
                null
            ],
        ]),
        "{r}"
    );
    // Annotations in Grafana filter on tags:
    let r = db
        .query("SELECT count(message) FROM alerts WHERE level = 'CRITICAL' AND host = 'web 1'")
        .await;
    assert_eq!(r["results"][0]["series"][0]["values"][0][1], 1, "{r}");
}

#[tokio::test]
async fn a_missing_database_is_a_permanent_failure() {
    let Some(db) = Influx::start().await else {
        return;
    };
    let p = plan(&format!(
        "[[notifiers.influxdb]]\nname = \"db\"\nurl = \"http://127.0.0.1:{}\"\ndatabase = \"nope\"\n",
        db.port
    ));
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    let err = p.notifiers[0].notifier.send(&e).await.unwrap_err();
    assert!(
        matches!(&err, wk_alerter::notify::NotifyError::Permanent(m) if m.contains("database not found")),
        "{err:?}"
    );
}
