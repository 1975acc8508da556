//! End to end over VictoriaMetrics: the real wk-agent writes to a real victoria-metrics
//! (`/write?db=telegraf`, as to InfluxDB), the real wk-alerter queries it through
//! `[[sources.victoriametrics]]`, and rules written for InfluxDB fire unchanged.

use std::time::Duration;

use crate::common::alerter::{Logged, event_at, write_agent_conf, write_alerter_conf};
use crate::common::servers::VictoriaMetrics;
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
    let (alerter_conf, events) = write_alerter_conf(
        dir.path(),
        &format!(
            // Its own port for the status page: the default one may be another test's.
            "[[sources.victoriametrics]]\n  url = \"{}\"\n  database = \"telegraf\"\n[http]\n  listen = \"127.0.0.1:0\"\n",
            vm.url()
        ),
    );
    let rules = dir.path().join("rules");
    std::fs::write(rules.join("cpu_idle.rhai"), CPU_RULE).unwrap();
    std::fs::write(rules.join("mem_used.rhai"), MEM_RULE).unwrap();
    // Raw InfluxQL cannot run on VictoriaMetrics: this file does not load, naming the call.
    std::fs::write(
        rules.join("raw.rhai"),
        "fn check() {\n    influxql(\"SELECT last(used_percent) FROM mem GROUP BY host\")\n}\n",
    )
    .unwrap();
    let agent_conf = write_agent_conf(
        dir.path(),
        &format!(
            "[[outputs.influxdb]]\n  urls = [\"{}\"]\n  database = \"telegraf\"\n  skip_database_creation = true\n",
            vm.url()
        ),
    );
    let alerter = Logged::alerter(&alerter_conf, &[], dir.path().join("alerter.log"));
    let agent = Logged::start(&agent, &agent_conf, &[], &[], dir.path().join("agent.log"));
    let fired = |rule: &str| event_at(&events, rule, "CRITICAL");
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
