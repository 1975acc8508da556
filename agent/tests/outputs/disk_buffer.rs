//! `buffer_strategy = "disk"` against a real influxd: an agent restarted during a database
//! outage loses nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::servers::Influxd;
use super::{now_ms_ns, output_from, series};

use crate::support::{daemon, signal};
use wk_core::testing::{KillOnDrop, poll_until as wait_for};

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
    let mut out = output_from(&disk_conf(&db, tmp.path()));
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

    let mut out = output_from(&disk_conf(&db, tmp.path()));
    let rec = out.open_disk_buffer().unwrap().unwrap();
    assert_eq!(rec.restored, 5, "what was unsent comes back");
    out.add_all(&all[9..]);
    assert!(out.flush().is_err(), "still down");
    drop(out);

    db.restart();
    let mut out = output_from(&disk_conf(&db, tmp.path()));
    assert_eq!(out.open_disk_buffer().unwrap().unwrap().restored, 8);
    assert_eq!(out.flush(), Ok(8));
    assert_eq!(out.buffered(), 0);
    assert_eq!(seqs(&db, "diskbuf"), (0..12).collect::<Vec<i64>>());
    drop(out);
    // Nothing is left to send again.
    let mut out = output_from(&disk_conf(&db, tmp.path()));
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
    let mut out = output_from(&conf);
    out.open_disk_buffer().unwrap();
    db.stop();
    out.add_all(&series("limited", now_ms_ns(), 8));
    assert_eq!(out.buffered(), 5);
    assert_eq!(out.stats.metrics_dropped, 3);
    db.restart();
    assert_eq!(out.flush(), Ok(5));
    assert_eq!(seqs(&db, "limited"), vec![3, 4, 5, 6, 7]);
}

struct Agent(KillOnDrop);

impl Agent {
    fn start(conf: &Path) -> Agent {
        Agent(KillOnDrop(daemon(conf, Stdio::null())))
    }

    fn stop(mut self) {
        signal(&self.0, libc::SIGTERM);
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
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

/// A tmpfs of `size` mounted on a temp dir for the test's lifetime (root only).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Regression: with the buffer on a full 64 KiB file system, recording written metrics failed
/// ("No space left on device") after the database came back, and every later metric was lost
/// until a restart. A full disk must drop the oldest (counted) and recover by itself.
#[test]
fn a_full_disk_drops_the_oldest_and_recovers_when_the_database_returns() {
    let fs = match Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(why) => wk_core::skip!("{why}"),
    };
    let Some(mut db) = Influxd::start() else {
        return;
    };
    let conf = format!(
        "[agent]\n  buffer_strategy = \"disk\"\n  buffer_directory = {:?}\n\
         [[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"wk\"\n  timeout = \"2s\"\n  metric_batch_size = 50\n",
        fs.path().join("buffer"),
        db.url()
    );
    let mut out = output_from(&conf);
    out.open_disk_buffer().unwrap();
    db.stop();
    // ~100 KiB of metrics into 64 KiB: the disk fills and the oldest go.
    let t0 = now_ms_ns();
    let outage = series("fulldisk", t0, 1000);
    for chunk in outage.chunks(20) {
        out.add_all(chunk);
    }
    let dropped = out.stats.metrics_dropped;
    assert!(dropped > 0, "the disk was never full");
    assert_eq!(
        out.buffered() as u64 + dropped,
        1000,
        "every metric is either buffered or counted as dropped"
    );
    assert!(out.flush().is_err(), "database still down");

    db.restart();
    let buffered = out.buffered();
    assert_eq!(out.flush(), Ok(buffered), "the backlog drains");
    // New metrics after recovery are stored and written: nothing is stuck.
    let after = series("fulldisk_after", t0 + 10_000_000_000, 300);
    for chunk in after.chunks(20) {
        out.add_all(chunk);
        assert_eq!(out.flush(), Ok(chunk.len()));
    }
    assert_eq!(seqs(&db, "fulldisk_after"), (0..300).collect::<Vec<i64>>());
    let kept = seqs(&db, "fulldisk");
    assert_eq!(kept.len(), buffered);
    assert_eq!(
        kept,
        ((1000 - buffered as i64)..1000).collect::<Vec<i64>>(),
        "the newest were kept"
    );
    assert_eq!(
        out.stats.metrics_dropped, dropped,
        "no drops once space was back"
    );
}

/// A disk filled by something else: appends fail (counted as dropped), and work again as soon
/// as space returns, without a restart.
#[test]
fn appends_recover_when_another_file_frees_the_disk() {
    let fs = match Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(why) => wk_core::skip!("{why}"),
    };
    let dir = fs.path().join("buffer");
    let (mut q, _) = wk_agent::models::disk_buffer::DiskBuffer::open(&dir, 100_000, true).unwrap();
    let hog = fs.path().join("hog");
    let mut f = std::fs::File::create(&hog).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let m = series("hogged", 0, 5);
    assert!(
        q.push(&m).is_err(),
        "nothing of ours to drop: the push fails"
    );
    std::fs::remove_file(&hog).unwrap();
    // The space is back when the hog's last descriptor closes: a process that another test
    // forks at that moment holds a copy until it execs (seen once in CI, under load).
    let mut pushed = None;
    let back = wk_core::testing::poll_until(std::time::Duration::from_secs(10), || {
        pushed = q.push(&m).ok();
        pushed.is_some()
    });
    assert!(back, "appends still fail after the space came back");
    assert_eq!(pushed, Some(0));
    assert_eq!(q.len(), 5);
    q.ack(5).unwrap();
    drop(q);
    let (q, rec) = wk_agent::models::disk_buffer::DiskBuffer::open(&dir, 100_000, true).unwrap();
    assert_eq!((q.len(), rec.restored), (0, 0));
}
