//! End to end over VictoriaMetrics: the real wk-agent writes to a real victoria-metrics
//! (`/write?db=telegraf`, as to InfluxDB), the real wk-alerter queries it through
//! `[[sources.victoriametrics]]`, and rules written for InfluxDB fire unchanged.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::servers::VictoriaMetrics;
use crate::stream::Killed;
use crate::tools::agent_binary;

/// Rules as they run on InfluxDB: a filter, a regex, mean, last and max per host.
const CPU_RULE: &str = r#"
rule(#{ every: "1s", notify: ["log"], message: "{{host}}: cpu idle {{value:.1}}%" });

fn check() {
    let cpu = query("cpu").field("usage_idle").where("cpu", "cpu-total").where_match("host", ".")
                 .range("1m").mean().group_by("host").run();
    for s in cpu {
        s.crit(s.value >= 0.0);
    }
    cpu
}
"#;

const MEM_RULE: &str = r#"
rule(#{ every: "1s", notify: ["log"] });

fn check() {
    let last = query("mem").field("used_percent").range("1m").last().group_by("host").run();
    let peak = query("mem").field("used_percent").range("1m").max().group_by("host").run();
    for s in last {
        s.crit(s.value >= 0.0 && peak.len() == last.len());
    }
    last
}
"#;

#[test]
fn agent_writes_to_victoriametrics_and_rules_fire_from_it() {
    let Some(vm) = VictoriaMetrics::start() else {
        return;
    };
    let agent = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("cpu_idle.rhai"), CPU_RULE).unwrap();
    std::fs::write(rules.join("mem_used.rhai"), MEM_RULE).unwrap();
    // Raw InfluxQL cannot run on VictoriaMetrics: this file does not load, naming the call.
    std::fs::write(
        rules.join("raw.rhai"),
        "fn check() {\n    influxql(\"SELECT last(used_percent) FROM mem GROUP BY host\")\n}\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        dir.path().join("alerter.conf"),
        format!(
            "[alerter]\n  rules_dir = {rules:?}\n  state_dir = {:?}\n  reload_interval = \"200ms\"\n\
             [[sources.victoriametrics]]\n  url = \"{}\"\n  database = \"telegraf\"\n\
             [[notifiers.log]]\n  name = \"log\"\n  file = {events:?}\n",
            dir.path().join("state"),
            vm.url(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.conf"),
        format!(
            "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n\
             [[inputs.mem]]\n[[inputs.cpu]]\n\
             [[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"telegraf\"\n  \
             skip_database_creation = true\n",
            vm.url()
        ),
    )
    .unwrap();
    let alerter_log = dir.path().join("alerter.log");
    let alerter = Killed(
        Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
            .arg("--config")
            .arg(dir.path().join("alerter.conf"))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&alerter_log).unwrap())
            .spawn()
            .expect("start wk-alerter"),
        alerter_log,
    );
    let agent_log = dir.path().join("agent.log");
    let agent = Killed(
        Command::new(&agent)
            .arg("--config")
            .arg(dir.path().join("agent.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .expect("start wk-agent"),
        agent_log,
    );
    let fired = |rule: &str| -> Option<serde_json::Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["rule"] == rule && e["level"] == "CRITICAL")
    };
    let mut both = None;
    let seen = wk_core::testing::poll_until(Duration::from_secs(40), || {
        both = fired("cpu_idle").zip(fired("mem_used"));
        both.is_some()
    });
    assert!(
        seen,
        "no CRITICAL from both rules within 40 s\n--- alerter ---\n{}\n--- agent ---\n{}",
        alerter.log(),
        agent.log()
    );
    let (cpu, mem) = both.unwrap_or_default();
    let host = cpu["tags"]["host"].as_str().unwrap_or("");
    assert!(!host.is_empty(), "{cpu}");
    assert_eq!(mem["tags"]["host"], host, "{mem}");
    assert!(
        cpu["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{host}: cpu idle ")),
        "{cpu}"
    );
    // What the agent wrote is where the rules looked: measurement_field names, the db label.
    let stored = vm.export("{__name__=\"cpu_usage_idle\",cpu=\"cpu-total\",db=\"telegraf\"}");
    assert!(
        !stored.is_empty(),
        "the agent's cpu points are in VictoriaMetrics"
    );
    let log = alerter.log();
    assert!(
        log.contains("raw.rhai:2:5: influxql() needs an InfluxDB source and this alerter queries VictoriaMetrics"),
        "{log}"
    );
    // Nothing else went wrong: no query failed.
    let other: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("ERROR") || l.contains("WARN")) && !l.contains("raw.rhai"))
        .collect();
    assert!(other.is_empty(), "{log}");
}
