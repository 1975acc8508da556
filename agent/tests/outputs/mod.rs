//! Outputs against real servers (no mocks): influxd 1.x and VictoriaMetrics, started by
//! `servers.rs`. Each test builds its output through the real config loader, writes through
//! `RunningOutput` (buffer, batches, retry bookkeeping) or the real agent loop, and reads the
//! data back with the server's own query API.

mod disk_buffer;
mod influxdb;
mod influxdb_v2;
pub mod servers;

use std::path::Path;

use wk_agent::config::{self, LoadRequest};
use wk_agent::hostpaths::HostPaths;
use wk_agent::metric::Metric;
use wk_agent::models::running_output::RunningOutput;

/// Loads `conf` (which must hold one `[[outputs.*]]`; an `[[inputs.cpu]]` is added because a
/// config needs an input) and returns the output.
pub fn output_from(conf: &str) -> RunningOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_from(
        dir.path(),
        &format!("[[inputs.cpu]]\n\n{conf}"),
        HostPaths::under(dir.path()),
    );
    plan.outputs.into_iter().next().expect("one output")
}

/// Loads a whole config through the real loader.
pub fn plan_from(dir: &Path, conf: &str, paths: HostPaths) -> config::Plan {
    let path = dir.join("wk-agent.conf");
    std::fs::write(&path, conf).expect("write config");
    let env = |k: &str| std::env::var(k).ok();
    let req = LoadRequest {
        env: &env,
        paths,
        ..LoadRequest::new(vec![path])
    };
    match config::load(&req) {
        Ok(p) => p,
        Err(e) => panic!(
            "config does not load:\n{}",
            e.errors
                .iter()
                .map(|d| format!("{}:{}: {}\n", d.line, d.column, d.message))
                .collect::<String>()
        ),
    }
}

/// Now, in ns, rounded to the millisecond (VictoriaMetrics keeps ms).
pub fn now_ms_ns() -> i64 {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    ns / 1_000_000 * 1_000_000
}

/// `n` metrics `name,host=h seq=<i>i,value=<i*0.5>` one millisecond apart from `t0`.
pub fn series(name: &str, t0: i64, n: usize) -> Vec<Metric> {
    (0..n)
        .map(|i| {
            Metric::new(name.to_owned(), t0 + i as i64 * 1_000_000)
                .with_tag("host", "h")
                .with_field("seq", i as i64)
                .with_field("value", i as f64 * 0.5)
        })
        .collect()
}
