//! The daemon in-process (`wk_agent::daemon::run`): the same reload/stop contract the CLI test
//! checks with real signals, driven through the control channel.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::daemon_config;
use tokio::sync::mpsc;
use wk_agent::config::{self, LoadRequest, Plan};
use wk_agent::daemon::{self, Control};

fn plan_writing_to(dir: &Path, out: &Path, version: &str) -> Option<Plan> {
    let conf = dir.join(format!("{version}.conf"));
    std::fs::write(&conf, daemon_config(out, version)).unwrap();
    config::load(&LoadRequest::new(vec![conf])).ok()
}

async fn wait_for_text(path: &PathBuf, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn reload_swaps_only_a_plan_that_builds_and_stop_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.out"), dir.path().join("b.out"));
    let plan = plan_writing_to(dir.path(), &first, "one").unwrap();
    let mut reloads = vec![
        plan_writing_to(dir.path(), &second, "two"),
        None, // a bad push: the running plan stays
    ];
    let (tx, rx) = mpsc::channel(4);
    let running = tokio::spawn(daemon::run(plan, move || reloads.pop().flatten(), rx));
    assert!(
        wait_for_text(&first, "version=one").await,
        "first plan writes"
    );

    tx.send(Control::Reload).await.unwrap();
    let size = std::fs::metadata(&first).unwrap().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        std::fs::metadata(&first).unwrap().len() > size,
        "after a failed reload the running plan keeps writing"
    );
    assert!(!second.exists());

    tx.send(Control::Reload).await.unwrap();
    assert!(
        wait_for_text(&second, "version=two").await,
        "the new plan runs"
    );
    tx.send(Control::Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .unwrap();
}

/// Regression: a reload during an output outage dropped the output's memory buffer, without
/// counting it. The output of the same name and alias in the new plan now takes it over.
#[tokio::test]
async fn a_reload_during_an_outage_keeps_the_unsent_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sink.lp");
    let plan = |version: &str, file: &Path| {
        let conf = dir.path().join(format!("{version}.conf"));
        std::fs::write(
            &conf,
            format!(
                "[global_tags]\n  version = \"{version}\"\n[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n\
                 [[inputs.cpu]]\n  percpu = false\n[[outputs.file]]\n  alias = \"sink\"\n  files = [{file:?}]\n"
            ),
        )
        .unwrap();
        config::load(&LoadRequest::new(vec![conf])).unwrap()
    };
    // The sink is down (every write fails), then a reload points it somewhere that works.
    let down = plan("one", Path::new("/dev/full"));
    let mut reloads = vec![plan("two", &out)];
    let stats = down.stats.clone();
    let (tx, rx) = mpsc::channel(4);
    let running = tokio::spawn(daemon::run(down, move || reloads.pop(), rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = ("file".to_owned(), Some("sink".to_owned()));
    let buffered = || {
        let (_, outputs) = stats.read();
        outputs
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, s)| s.buffer_size)
    };
    while buffered() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(buffered() >= 2, "nothing buffered during the outage");

    tx.send(Control::Reload).await.unwrap();
    assert!(
        wait_for_text(&out, "version=one").await,
        "what the outage left was not written after the reload"
    );
    tx.send(Control::Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .unwrap();
    let (_, outputs) = stats.read();
    let (_, s) = outputs.iter().find(|(k, _)| *k == key).unwrap();
    assert_eq!(s.counts.metrics_dropped, 0, "{s:?}");
}

/// A server for the influxdb_v2 output: 403 for writes to bucket `secret`, 204 for others.
fn refusing_server() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then the body by Content-Length.
            let (head, len) = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (head, i + 4 + len);
                }
            };
            while buf.len() < len {
                match s.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let status = match head.lines().next().unwrap_or("").contains("bucket=secret") {
                true => "403 Forbidden",
                false => "204 No Content",
            };
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    url
}

/// Regression (review of 1d28d1f): `--once` with influxdb_v2 `bucket_tag` wrote one bucket,
/// kept the metrics of a bucket refused with 403, and exited 0 while they were lost. Metrics
/// left in a buffer after the flush make the run fail.
#[tokio::test]
async fn once_fails_when_a_refused_bucket_leaves_metrics_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("once.conf");
    let url = refusing_server();
    std::fs::write(
        &conf,
        format!(
            "[[inputs.mem]]\n  [inputs.mem.tags]\n    bucket = \"secret\"\n\
             [[inputs.system]]\n  [inputs.system.tags]\n    bucket = \"open\"\n\
             [[outputs.influxdb_v2]]\n  urls = [\"{url}\"]\n  bucket = \"main\"\n  bucket_tag = \"bucket\"\n"
        ),
    )
    .unwrap();
    let plan = config::load(&LoadRequest::new(vec![conf])).unwrap();
    assert!(
        !daemon::once(plan).await,
        "the refused bucket's metrics were not written"
    );
}
