//! `[[outputs.influxdb_v2]]` against a real VictoriaMetrics (`/api/v2/write`).

use super::servers::{LimitProxy, VictoriaMetrics};
use super::{now_ms_ns, output_from, series};

fn v2_round_trip(encoding: &str) {
    let Some(vm) = VictoriaMetrics::start() else {
        return;
    };
    let name = format!("wkt_v2_{encoding}");
    let mut out = output_from(&format!(
        "[[outputs.influxdb_v2]]\n  urls = [\"{}\"]\n  token = \"${{WK_TEST_NO_SUCH_VAR:-t0ken}}\"\n  organization = \"org\"\n  bucket = \"wkt\"\n  content_encoding = \"{encoding}\"\n  metric_batch_size = 3\n",
        vm.url()
    ));
    let t0 = now_ms_ns();
    for m in series(&name, t0, 5) {
        out.add(&m);
    }
    assert_eq!(out.flush(), Ok(5));
    assert_eq!(out.stats.metrics_written, 5);

    let got = vm.export_until(&format!("{{__name__=~\"{name}_.*\"}}"), 10);
    let names: Vec<String> = got
        .iter()
        .map(|s| s.0["__name__"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![format!("{name}_seq"), format!("{name}_value")],
        "{got:?}"
    );
    let ts: Vec<i64> = (0..5).map(|i| t0 / 1_000_000 + i).collect();
    assert_eq!(got[0].1, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(got[0].2, ts);
    assert_eq!(got[1].1, vec![0.0, 0.5, 1.0, 1.5, 2.0]);
    assert_eq!(got[1].2, ts);
    assert_eq!(got[0].0["host"], serde_json::Value::from("h"));
}

#[test]
fn v2_write_lands_in_victoria_metrics_gzip() {
    v2_round_trip("gzip");
}

#[test]
fn v2_write_lands_in_victoria_metrics_identity() {
    v2_round_trip("identity");
}

#[test]
fn v2_413_splits_the_batch_until_it_fits() {
    let Some(vm) = VictoriaMetrics::start() else {
        return;
    };
    // One line is about 60 bytes: two fit under the limit, four do not.
    let proxy = LimitProxy::start(vm.url(), 150);
    let mut out = output_from(&format!(
        "[[outputs.influxdb_v2]]\n  urls = [\"{}\"]\n  bucket = \"wkt\"\n  content_encoding = \"identity\"\n  metric_batch_size = 8\n",
        proxy.url()
    ));
    let t0 = now_ms_ns();
    for m in series("wkt_split", t0, 8) {
        out.add(&m);
    }
    assert_eq!(out.flush(), Ok(8));
    let statuses: Vec<u16> = proxy.log.lock().unwrap().iter().map(|e| e.1).collect();
    assert_eq!(statuses, vec![413, 413, 204, 204, 413, 204, 204]);
    let got = vm.export_until("{__name__=\"wkt_split_seq\"}", 8);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, (0..8).map(f64::from).collect::<Vec<f64>>());

    // A single metric larger than the limit cannot be split: it stays buffered.
    let tiny = LimitProxy::start(vm.url(), 10);
    let mut out = output_from(&format!(
        "[[outputs.influxdb_v2]]\n  urls = [\"{}\"]\n  bucket = \"wkt\"\n  content_encoding = \"identity\"\n",
        tiny.url()
    ));
    for m in series("wkt_toolarge", t0, 2) {
        out.add(&m);
    }
    match out.flush() {
        Err(wk_agent::outputs::WriteError::Retry(msg)) => assert!(msg.contains("413"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.buffered(), 2);
}

#[test]
fn v2_401_keeps_the_batch() {
    let Some(vm) = VictoriaMetrics::start_with(&["-httpAuth.username=wk", "-httpAuth.password=pw"])
    else {
        return;
    };
    let mut out = output_from(&format!(
        "[[outputs.influxdb_v2]]\n  urls = [\"{}\"]\n  token = \"not-basic-auth\"\n  bucket = \"wkt\"\n",
        vm.url()
    ));
    for m in series("wkt_unauth", now_ms_ns(), 3) {
        out.add(&m);
    }
    match out.flush() {
        Err(wk_agent::outputs::WriteError::Retry(msg)) => {
            assert!(msg.contains("HTTP 401"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.buffered(), 3);
    assert_eq!(out.stats.metrics_rejected, 0);
}
