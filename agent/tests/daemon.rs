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
