//! `[[outputs.influxdb]]` against a real influxd 1.x.

use std::time::Duration;

use serde_json::Value;
use wk_agent::metric::Metric;
use wk_agent::models::running_output::RunningOutput;
use wk_agent::outputs::WriteError;

use super::servers::{Influxd, free_port, free_ports};
use super::{now_ms_ns, output_from, plan_from, series};

fn conf(url: &str, extra: &str) -> String {
    format!("[[outputs.influxdb]]\n  urls = [\"{url}\"]\n  database = \"wkt\"\n{extra}\n")
}

/// An `[[outputs.influxdb]]` writing to database `wkt` of `db`, with `extra` options.
fn output_to(db: &Influxd, extra: &str) -> RunningOutput {
    output_from(&conf(&db.url(), extra))
}

/// `SELECT seq` of a measurement, in time order.
fn seqs(db: &Influxd, measurement: &str) -> Vec<i64> {
    db.rows("wkt", &format!("SELECT seq FROM \"{measurement}\""))
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq is an integer"))
        .collect()
}

fn round_trip(encoding: &str) {
    let Some(db) = Influxd::start() else { return };
    let mut out = output_to(&db, &format!("  content_encoding = \"{encoding}\""));
    let t0 = now_ms_ns() + 123; // a nanosecond part, kept exactly
    let m = Metric::new("wkt_types", t0)
        .with_tag("host", "h 1")
        .with_tag("path", "/a,b=c")
        .with_field("f", 1.5)
        .with_field("whole", 2.0)
        .with_field("neg", -3i64)
        .with_field("u", 5u64)
        .with_field("big", u64::MAX)
        .with_field("b", true)
        .with_field("s", "say \"hi\" \\ ok");
    out.add(&m);
    assert_eq!(out.flush(), Ok(1));
    assert_eq!(out.stats.metrics_written, 1);

    let rows = db.rows("wkt", "SELECT * FROM wkt_types");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["time"].as_i64(), Some(t0));
    assert_eq!(r["host"], Value::from("h 1"));
    assert_eq!(r["path"], Value::from("/a,b=c"));
    assert_eq!(r["f"].as_f64(), Some(1.5));
    assert_eq!(r["whole"].as_f64(), Some(2.0));
    assert_eq!(r["neg"].as_i64(), Some(-3));
    assert_eq!(r["u"].as_i64(), Some(5));
    // Telegraf clamps a uint above i64::MAX when writing it as an integer.
    assert_eq!(r["big"].as_i64(), Some(i64::MAX));
    assert_eq!(r["b"], Value::from(true));
    assert_eq!(r["s"], Value::from("say \"hi\" \\ ok"));
    let types = db.field_types("wkt", "wkt_types");
    let want: Vec<(String, String)> = [
        ("b", "boolean"),
        ("big", "integer"),
        ("f", "float"),
        ("neg", "integer"),
        ("s", "string"),
        ("u", "integer"),
        ("whole", "float"),
    ]
    .iter()
    .map(|(k, t)| (k.to_string(), t.to_string()))
    .collect();
    assert_eq!(types, want);
}

#[test]
fn values_and_types_round_trip_gzip() {
    round_trip("gzip");
}

#[test]
fn values_and_types_round_trip_identity() {
    round_trip("identity");
}

#[test]
fn partial_write_keeps_good_points_and_rejects_the_bad_one_once() {
    let Some(db) = Influxd::start() else { return };
    db.query("", "CREATE DATABASE wkt");
    let t0 = now_ms_ns();
    // x is a float in this series from now on.
    assert_eq!(
        db.write_raw("wkt", &format!("conflict,host=h x=0.5 {t0}\n")),
        204
    );

    let mut out = output_to(&db, "  metric_batch_size = 100");
    for i in 1..=5i64 {
        let mut m = Metric::new("conflict", t0 + i * 1_000_000).with_tag("host", "h");
        if i == 3 {
            m.add_field("x", "not a float");
        } else {
            m.add_field("x", i as f64);
        }
        out.add(&m);
    }
    // The good points are stored, the bad one is rejected (not an error of the flush).
    assert_eq!(out.flush(), Ok(4));
    assert_eq!(out.buffered(), 0);
    assert_eq!(out.stats.metrics_written, 4);
    assert_eq!(out.stats.metrics_rejected, 1);
    assert_eq!(out.stats.write_errors, 0);
    assert_eq!(out.retry_in(), None);

    let xs: Vec<(i64, f64)> = db
        .rows("wkt", "SELECT x FROM conflict")
        .iter()
        .map(|r| (r["time"].as_i64().unwrap(), r["x"].as_f64().unwrap()))
        .collect();
    let want: Vec<(i64, f64)> = [0i64, 1, 2, 4, 5]
        .iter()
        .map(|i| (t0 + i * 1_000_000, if *i == 0 { 0.5 } else { *i as f64 }))
        .collect();
    assert_eq!(xs, want);

    // Nothing is left to retry: a second flush writes nothing and stores nothing twice.
    assert_eq!(out.flush(), Ok(0));
    assert_eq!(db.rows("wkt", "SELECT x FROM conflict").len(), 5);
}

#[test]
fn outage_keeps_the_batch_and_delivers_every_point_once() {
    let Some(mut db) = Influxd::start() else {
        return;
    };
    let mut out = output_to(&db, "  timeout = \"2s\"\n  metric_batch_size = 4");
    let t0 = now_ms_ns();
    let all = series("outage", t0, 10);
    for m in &all[..3] {
        out.add(m);
    }
    assert_eq!(out.flush(), Ok(3));

    db.stop();
    for m in &all[3..] {
        out.add(m);
    }
    match out.flush() {
        Err(WriteError::Retry(msg)) => {
            assert!(msg.contains("could not write any address"), "{msg}")
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert_eq!(out.buffered(), 7, "the failed batch and the rest are kept");
    assert_eq!(out.stats.write_errors, 1);
    let wait = out.retry_in().expect("backing off after a failure");
    assert!(wait <= Duration::from_millis(1250), "{wait:?}");
    // A second failure doubles the delay.
    assert!(out.flush().is_err());
    assert!(out.retry_in().expect("backing off") > Duration::from_millis(1000));
    assert_eq!(out.consecutive_failures(), 2);

    db.restart();
    assert_eq!(out.flush(), Ok(7));
    assert_eq!(out.buffered(), 0);
    assert_eq!(out.retry_in(), None);
    assert_eq!(out.consecutive_failures(), 0);
    assert_eq!(seqs(&db, "outage"), (0..10).collect::<Vec<i64>>());
    assert_eq!(out.stats.metrics_written, 10);
}

#[test]
fn tiny_buffer_drops_the_oldest_and_counts_exactly() {
    let Some(db) = Influxd::start() else { return };
    let mut out = output_to(&db, "  metric_buffer_limit = 3\n  metric_batch_size = 2");
    for m in series("overflow", now_ms_ns(), 7) {
        out.add(&m);
    }
    assert_eq!(out.buffered(), 3);
    assert_eq!(out.stats.metrics_dropped, 4);
    assert_eq!(out.take_unreported_drops(), 4);
    assert_eq!(out.take_unreported_drops(), 0);
    assert_eq!(out.flush(), Ok(3));
    assert_eq!(seqs(&db, "overflow"), vec![4, 5, 6]);
}

#[test]
fn database_tag_routes_each_metric_and_can_be_excluded() {
    let Some(db) = Influxd::start() else { return };
    let mut out = output_to(
        &db,
        "  database_tag = \"dest\"\n  exclude_database_tag = true",
    );
    let t0 = now_ms_ns();
    for (i, dest) in [Some("alpha"), None, Some("beta"), Some("alpha")]
        .iter()
        .enumerate()
    {
        let mut m = series("routed", t0 + i as i64 * 1_000_000, 1).remove(0);
        m.fields[0].1 = (i as i64).into();
        if let Some(d) = dest {
            m.set_tag("dest", *d);
        }
        out.add(&m);
    }
    assert_eq!(out.flush(), Ok(4));
    let count = |name: &str| -> Vec<i64> {
        db.rows(name, "SELECT seq FROM routed")
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(count("alpha"), vec![0, 3]);
    assert_eq!(count("beta"), vec![2]);
    assert_eq!(count("wkt"), vec![1]);
    let tags = db.rows("alpha", "SHOW TAG KEYS FROM routed");
    let keys: Vec<&str> = tags.iter().filter_map(|r| r["tagKey"].as_str()).collect();
    assert_eq!(keys, vec!["host"], "the routing tag is excluded");
}

/// Regression: with `database_tag`, a metric naming a database its user may not create
/// (CREATE DATABASE: 403) got "database not found", the create was tried again, and the
/// batch was kept forever: every other database's metrics stalled behind it until the
/// buffer overflowed. As Telegraf: not created at any URL, that database's metrics are
/// dropped, with a reason naming it; the rest is written.
#[test]
fn a_database_that_cannot_be_created_does_not_block_the_others() {
    let Some(db) = Influxd::start_with("  auth-enabled = true") else {
        return;
    };
    db.query(
        "",
        "CREATE USER admin WITH PASSWORD 'adm1n' WITH ALL PRIVILEGES",
    );
    for q in [
        "CREATE DATABASE wkt",
        "CREATE USER writer WITH PASSWORD 'wr1te'",
        "GRANT WRITE ON wkt TO writer",
    ] {
        db.query_as("admin", "adm1n", "", q);
    }
    let options = format!(
        "  urls = [\"{}\"]\n  database = \"wkt\"\n  database_tag = \"dest\"\n  username = \"writer\"\n  password = \"wr1te\"\n",
        db.url()
    );
    // Four metrics, the odd ones for the database the writer may not create.
    let batch = |t0: i64| -> Vec<Metric> {
        let mut metrics = series("mixed", t0, 4);
        metrics[1].set_tag("dest", "forbidden");
        metrics[3].set_tag("dest", "forbidden");
        metrics
    };
    let t0 = now_ms_ns();

    // What the output says: which database, and why its metrics go.
    let paths = wk_agent::hostpaths::HostPaths::default();
    let stats = Default::default();
    let ctx = wk_agent::plugin::BuildContext {
        paths: &paths,
        interval: Duration::from_secs(10),
        stats: &stats,
    };
    let spec = wk_agent::outputs::find("influxdb").expect("registered");
    let (mut output, said) =
        wk_core::testing::read_table(&format!("[influxdb]\n{options}"), |o| (spec.build)(o, &ctx));
    assert!(said.is_empty(), "{said:?}");
    match output.write(&batch(t0)) {
        Err(WriteError::Rejected { rejected, reason }) => {
            assert_eq!(rejected, 2);
            assert!(
                reason.contains("database \"forbidden\" does not exist and cannot be created")
                    && reason.contains("HTTP 403"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Through the buffer: settled, nothing kept, the other database written.
    let mut out = output_from(&format!("[[outputs.influxdb]]\n{options}"));
    for m in batch(t0 + 10_000_000) {
        out.add(&m);
    }
    assert_eq!(out.flush(), Ok(2));
    assert_eq!(out.buffered(), 0);
    assert_eq!(out.stats.metrics_rejected, 2);
    let rows = db.query_as("admin", "adm1n", "wkt", "SELECT seq FROM mixed");
    let seqs: Vec<i64> = rows["results"][0]["series"][0]["values"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[1].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [0, 2, 0, 2], "{rows}");
}

/// Regression: `database = ""` was a load error; Telegraf writes to its default database.
#[test]
fn an_empty_database_is_telegraf() {
    let Some(db) = Influxd::start() else { return };
    let mut out = output_from(&format!(
        "[[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"\"\n",
        db.url()
    ));
    out.add(&series("defaulted", now_ms_ns(), 1)[0]);
    assert_eq!(out.flush(), Ok(1));
    let rows = db.rows("telegraf", "SELECT seq FROM defaulted");
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn failover_writes_through_the_live_url() {
    let Some(db) = Influxd::start() else { return };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut out = output_from(&format!(
        "[[outputs.influxdb]]\n  urls = [\"{dead}\", \"{}\"]\n  database = \"wkt\"\n  metric_batch_size = 1\n",
        db.url()
    ));
    for m in series("failover", now_ms_ns(), 6) {
        out.add(&m);
    }
    // One batch per metric: whatever order the URLs are tried in, each lands once.
    assert_eq!(out.flush(), Ok(6));
    assert_eq!(seqs(&db, "failover"), (0..6).collect::<Vec<i64>>());
}

#[test]
fn every_url_down_is_a_retry_naming_them() {
    let [p1, p2] = free_ports::<2>();
    let (dead1, dead2) = (
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    );
    let mut out = output_from(&format!(
        "[[outputs.influxdb]]\n  urls = [\"{dead1}\", \"{dead2}\"]\n"
    ));
    out.add(&series("down", now_ms_ns(), 1)[0]);
    match out.flush() {
        Err(WriteError::Retry(msg)) => {
            assert!(msg.contains(&dead1) && msg.contains(&dead2), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.buffered(), 1);
}

#[test]
fn password_file_and_basic_auth() {
    let Some(db) = Influxd::start_with("  auth-enabled = true") else {
        return;
    };
    // With no user yet, influxd lets the first admin be created without credentials.
    db.query(
        "",
        "CREATE USER wk WITH PASSWORD 's3cret' WITH ALL PRIVILEGES",
    );
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    // An output of user wk with the password in `pw`, then the option lines `more`.
    let as_wk = |more: &str| {
        let options = format!("  username = \"wk\"\n  password_file = {pw:?}\n{more}");
        output_to(&db, &options)
    };
    let mut out = as_wk("");
    out.add(&series("authed", now_ms_ns(), 1)[0]);
    assert_eq!(out.flush(), Ok(1));

    // A wrong password is a 401: Telegraf drops the batch (any 4xx), and so do we, counted.
    std::fs::write(&pw, "wrong").unwrap();
    let mut bad = as_wk("  skip_database_creation = true");
    bad.add(&series("authed", now_ms_ns() + 1_000_000, 1)[0]);
    assert_eq!(bad.flush(), Ok(0));
    assert_eq!(bad.stats.metrics_rejected, 1);
    let rows = db.query_as("wk", "s3cret", "wkt", "SELECT count(seq) FROM authed");
    assert_eq!(
        rows["results"][0]["series"][0]["values"][0][1],
        Value::from(1),
        "{rows}"
    );
}

#[tokio::test]
async fn the_agent_loop_delivers_cpu_metrics_with_telegraf_types() {
    let Some(db) = Influxd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let env = |k: &str| std::env::var(k).ok();
    let plan = plan_from(
        tmp.path(),
        &format!(
            "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n\n\
             [[inputs.cpu]]\n  percpu = false\n\n{}",
            conf(&db.url(), "")
        ),
        wk_agent::hostpaths::HostPaths::from_env(&env),
    );
    let url = db.url();
    // Stop as soon as InfluxDB holds two cpu points (a readiness check, with a deadline).
    let stop = async move {
        let start = std::time::Instant::now();
        loop {
            let u = url.clone();
            let n = tokio::task::spawn_blocking(move || {
                let q = format!("{u}/query?db=wkt&q=SELECT%20count(usage_idle)%20FROM%20cpu");
                super::servers::get(&q).map(|(_, b)| b).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let v: Value = serde_json::from_str(&n).unwrap_or(Value::Null);
            let count = v["results"][0]["series"][0]["values"][0][1]
                .as_i64()
                .unwrap_or(0);
            if count >= 2 || start.elapsed() > Duration::from_secs(30) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let unsent = wk_agent::agent::run(plan, stop).await;
    assert!(unsent.is_empty(), "{} metrics unsent", unsent.len());
    let rows = db.rows("wkt", "SELECT * FROM cpu");
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["cpu"] == "cpu-total"));
    let types = db.field_types("wkt", "cpu");
    assert!(types.len() >= 10, "{types:?}");
    for (k, t) in &types {
        assert!(k.starts_with("usage_"), "{k}");
        assert_eq!(t, "float", "{k}");
    }
}

#[test]
fn unparsable_lines_are_rejected_alone() {
    // influxd 1.x does not accept the `u` suffix: with influx_uint_support the line holding a
    // uint is refused ("unable to parse"), the lines around it are stored.
    let Some(db) = Influxd::start() else { return };
    let mut out = output_to(&db, "  influx_uint_support = true");
    let t0 = now_ms_ns();
    let mut batch = series("uints", t0, 4);
    batch[1].add_field("counter", 7u64);
    for m in &batch {
        out.add(m);
    }
    assert_eq!(out.flush(), Ok(3));
    assert_eq!(out.stats.metrics_rejected, 1);
    assert_eq!(seqs(&db, "uints"), vec![0, 2, 3]);
}

#[test]
fn https_with_tls_ca_and_with_insecure_skip_verify() {
    let Some((db, cert)) = Influxd::start_tls() else {
        return;
    };
    assert!(db.url().starts_with("https://"));
    let t0 = now_ms_ns();
    // Trusting the server's certificate through tls_ca.
    let mut out = output_to(&db, &format!("  tls_ca = \"{}\"", cert.display()));
    out.add(&series("tls", t0, 1)[0]);
    assert_eq!(out.flush(), Ok(1));
    // Without tls_ca the self-signed certificate is refused: kept, retried.
    let mut strict = output_to(&db, "");
    strict.add(&series("tls", t0 + 1_000_000, 1)[0]);
    assert!(matches!(strict.flush(), Err(WriteError::Retry(_))));
    assert_eq!(strict.buffered(), 1);
    // insecure_skip_verify accepts it.
    let mut lax = output_to(&db, "  insecure_skip_verify = true");
    lax.add(&series("tls", t0 + 2_000_000, 1)[0]);
    assert_eq!(lax.flush(), Ok(1));
    assert_eq!(seqs(&db, "tls"), vec![0, 0]);
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}
