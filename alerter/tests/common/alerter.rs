//! The alerter as the end-to-end tests set it up: its config's common sections, rules that
//! mark series critical, the log notifier's events, and `wk-alerter` (or `wk-agent`) run as a
//! child process whose stderr is kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use wk_core::testing::KillOnDrop;

/// A rule with `options` (Rhai map entries, e.g. `every: "1s", notify: ["log"]`) that runs
/// `query` (up to, not including, `.run()`) and marks each series critical when `crit` (an
/// expression of the series `s`) holds.
pub fn crit_rule(options: &str, query: &str, crit: &str) -> String {
    format!(
        "
rule(#{{ {options} }});

fn check() {{
    let series = {query}.run();
    for s in series {{
        s.crit({crit});
    }}
    series
}}
"
    )
}

/// The points `series=<v> <t>` (`series` is `measurement,tags field`) for each of `values`,
/// the first at `t0` and one every `step` ns after.
pub fn points(series: &str, values: &[f64], t0: i64, step: i64) -> Vec<wk_core::metric::Metric> {
    let text: String = values
        .iter()
        .zip(0..)
        .map(|(v, i): (&f64, i64)| format!("{series}={v} {}\n", t0 + i * step))
        .collect();
    wk_core::lineproto::parse(&text, 0).unwrap()
}

/// The `[alerter]` section with its rules in `dir/rules` (created) and its state in
/// `dir/state`, then `extra` lines of the section.
pub fn alerter_section(dir: &Path, extra: &str) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    format!(
        "[alerter]\n  rules_dir = {rules:?}\n  state_dir = {:?}\n{extra}",
        dir.join("state")
    )
}

/// A `[[notifiers.log]]` named `log` writing each notification as a JSON line to `file`.
pub fn log_notifier(file: &Path) -> String {
    format!("[[notifiers.log]]\n  name = \"log\"\n  file = {file:?}\n")
}

/// Writes `dir/alerter.conf`: [`alerter_section`] (reloading rules every 200 ms), `data` (a
/// `[stream]` or source section) and [`log_notifier`] to `dir/events.jsonl`. Returns the
/// config's path and the events file.
pub fn write_alerter_conf(dir: &Path, data: &str) -> (PathBuf, PathBuf) {
    let (conf, events) = (dir.join("alerter.conf"), dir.join("events.jsonl"));
    let text = format!(
        "{}{data}{}",
        alerter_section(dir, "  reload_interval = \"200ms\"\n"),
        log_notifier(&events)
    );
    std::fs::write(&conf, text).unwrap();
    (conf, events)
}

/// Writes `dir/agent.conf`: the agent gathers mem and cpu every second and flushes to
/// `outputs` (TOML) every second. Returns its path.
pub fn write_agent_conf(dir: &Path, outputs: &str) -> PathBuf {
    let conf = dir.join("agent.conf");
    let text = format!(
        "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n[[inputs.mem]]\n[[inputs.cpu]]\n{outputs}"
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// The JSON lines of `file` (none while it does not exist; a line being written is skipped).
pub fn json_lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The first event of `rule` at `level` the log notifier wrote to `file`.
pub fn event_at(file: &Path, rule: &str, level: &str) -> Option<Value> {
    json_lines(file)
        .into_iter()
        .find(|e| e["rule"] == rule && e["level"] == level)
}

/// Runs `wk-alerter --config CONF ARGS` to its end: (exit code, stdout trimmed, stderr).
pub fn cli(conf: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .arg("--config")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A program the test started, killed when dropped, its stderr in a file.
pub struct Logged {
    pub child: KillOnDrop,
    /// The program's file name, for messages.
    name: String,
    log: PathBuf,
}

impl Logged {
    /// Starts `program --config CONF ARGS` with `env` added, stdout discarded, stderr to `log`.
    pub fn start(
        program: &Path,
        conf: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Logged {
        let child = Command::new(program)
            .arg("--config")
            .arg(conf)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Logged {
            child: KillOnDrop(child),
            name: program
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into(),
            log,
        }
    }

    /// `wk-alerter --config CONF run`, its stderr in `log`.
    pub fn alerter(conf: &Path, env: &[(&str, &str)], log: PathBuf) -> Logged {
        let bin = Path::new(env!("CARGO_BIN_EXE_wk-alerter"));
        Logged::start(bin, conf, &["run"], env, log)
    }

    /// Polls `ready` until it holds; fails the test, showing the log, when the program exits
    /// first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: std::time::Duration, ready: impl FnMut() -> bool) {
        let log = self.log.clone();
        self.child.wait_ready(&self.name, timeout, ready, || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
