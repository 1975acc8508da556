//! `buffer_strategy = "disk"` against a real influxd: an agent restarted during a database
//! outage loses nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::Influxd;
use super::{now_ms_ns, output_from, series};

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn seqs(db: &Influxd, measurement: &str) -> Vec<i64> {
    db.rows("wk", &format!("SELECT seq FROM \"{measurement}\""))
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq"))
        .collect()
}

fn disk_conf(db: &Influxd, dir: &Path) -> String {
    format!(
        "[agent]\n  buffer_strategy = \"disk\"\n  buffer_directory = {:?}\n\
         [[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"wk\"\n  timeout = \"2s\"\n  metric_batch_size = 4\n",
        dir.join("buffer"),
        db.url()
    )
}

/// The output process goes away with metrics buffered during an outage; a new one (same
/// config) finds them on disk and delivers every one, in order, once.
#[test]
fn disk_buffer_survives_a_restart_during_an_outage() {
    let Some(mut db) = Influxd::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let all = series("diskbuf", now_ms_ns(), 12);
    let mut out = output_from(tmp.path(), &disk_conf(&db, tmp.path()));
    let rec = out
        .open_disk_buffer()
        .unwrap()
        .expect("a disk buffer was configured");
    assert_eq!(rec.restored, 0);
    out.add_all(&all[..4]);
    assert_eq!(out.flush(), Ok(4));

    db.stop();
    out.add_all(&all[4..9]);
    assert!(out.flush().is_err());
    assert_eq!(out.buffered(), 5);
    drop(out); // the agent stops (or crashes) during the outage

    let mut out = output_from(tmp.path(), &disk_conf(&db, tmp.path()));
    let rec = out.open_disk_buffer().unwrap().unwrap();
    assert_eq!(rec.restored, 5, "what was unsent comes back");
    out.add_all(&all[9..]);
    assert!(out.flush().is_err(), "still down");
    drop(out);

    db.restart();
    let mut out = output_from(tmp.path(), &disk_conf(&db, tmp.path()));
    assert_eq!(out.open_disk_buffer().unwrap().unwrap().restored, 8);
    assert_eq!(out.flush(), Ok(8));
    assert_eq!(out.buffered(), 0);
    assert_eq!(seqs(&db, "diskbuf"), (0..12).collect::<Vec<i64>>());
    // Nothing is left to send again.
    let mut out = output_from(tmp.path(), &disk_conf(&db, tmp.path()));
    assert_eq!(out.open_disk_buffer().unwrap().unwrap().restored, 0);
}

/// With a memory buffer a tiny limit drops the oldest; the disk buffer obeys the same limit.
#[test]
fn disk_buffer_limit_drops_the_oldest_and_counts_them() {
    let Some(mut db) = Influxd::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let conf = format!("{}  metric_buffer_limit = 5\n", disk_conf(&db, tmp.path()));
    let mut out = output_from(tmp.path(), &conf);
    out.open_disk_buffer().unwrap();
    db.stop();
    out.add_all(&series("limited", now_ms_ns(), 8));
    assert_eq!(out.buffered(), 5);
    assert_eq!(out.stats.metrics_dropped, 3);
    db.restart();
    assert_eq!(out.flush(), Ok(5));
    assert_eq!(seqs(&db, "limited"), vec![3, 4, 5, 6, 7]);
}

struct Agent(Child);

impl Agent {
    fn start(conf: &Path) -> Agent {
        Agent(
            Command::new(env!("CARGO_BIN_EXE_wk-agent"))
                .args(["--config", conf.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start wk-agent"),
        )
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole agent: gathering every second into influxd with a disk buffer, while a file
/// output records every metric gathered. influxd goes down, the agent is restarted during
/// the outage, influxd comes back: every recorded point is in influxd.
#[test]
fn agent_restarted_during_an_outage_delivers_every_gathered_point() {
    let Some(mut db) = Influxd::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let record = tmp.path().join("record.lp");
    let conf = tmp.path().join("agent.conf");
    std::fs::write(
        &conf,
        format!(
            "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n\
             buffer_strategy = \"disk\"\n  buffer_directory = {:?}\n\
             [[inputs.mem]]\n\
             [[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"wk\"\n  timeout = \"1s\"\n\
             [[outputs.file]]\n  files = [{record:?}]\n",
            tmp.path().join("buffer"),
            db.url()
        ),
    )
    .unwrap();
    let recorded = || -> BTreeSet<i64> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("mem "))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let stored = |db: &Influxd| -> BTreeSet<i64> {
        db.rows("wk", "SELECT used FROM mem")
            .iter()
            .filter_map(|r| r["time"].as_i64())
            .collect()
    };

    db.query("", "CREATE DATABASE wk");
    let agent = Agent::start(&conf);
    assert!(
        wait_for(Duration::from_secs(20), || stored(&db).len() >= 2),
        "no data reached influxd"
    );
    db.stop();
    let at_outage = recorded().len();
    assert!(wait_for(Duration::from_secs(20), || recorded().len()
        >= at_outage + 3));
    agent.stop();

    // Restarted while the database is still down.
    let agent = Agent::start(&conf);
    let n = recorded().len();
    assert!(wait_for(Duration::from_secs(20), || recorded().len() >= n + 2));
    agent.stop();

    db.restart();
    let agent = Agent::start(&conf);
    let want = recorded();
    let delivered = wait_for(Duration::from_secs(30), || stored(&db).is_superset(&want));
    agent.stop();
    let missing: Vec<_> = want.difference(&stored(&db)).copied().collect();
    assert!(
        delivered && missing.is_empty(),
        "{} of {} gathered points never reached influxd: {missing:?}",
        missing.len(),
        want.len()
    );
}
