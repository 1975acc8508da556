//! Rules against a real InfluxDB and a real VictoriaMetrics: the same query gives the same
//! series from InfluxDB (InfluxQL), from VictoriaMetrics (MetricsQL) and from the memory source
//! (native evaluation) over the same points, and a whole rule gives the same observations from
//! all three. VictoriaMetrics keeps every value as a float: its answers are compared with the
//! memory source's after integers are widened (`count` stays an integer), see
//! `source::victoriametrics`.

use std::sync::Arc;
use std::time::Duration;

use wk_alerter::model::{CycleResult, EvalFailure, Observation, Value};
use wk_alerter::query::{Aggregate, Query, TagFilter, TagMatch, compile_regex};
use wk_alerter::rules::load_rule_source;
use wk_alerter::source::{
    InfluxAuth, InfluxDbConfig, InfluxDbSource, MemorySource, QuerySource, Series,
    VictoriaMetricsConfig, VictoriaMetricsSource,
};

use crate::common::influxd::Influxd;
use crate::common::servers::{VictoriaMetrics, http};

const S: i64 = 1_000_000_000;
/// Evaluation time: fixed, so InfluxDB and the memory source see the same window.
const NOW: i64 = 1_700_000_000 * S;
const DB: &str = "telegraf";

/// Hosts whose names try to break out of InfluxQL string literals.
const HOSTS: [&str; 4] = ["web1", "web2", "x' OR 'a'='a", "back\\slash \"q\""];

/// Escapes a tag value for line protocol.
fn lp_tag(v: &str) -> String {
    v.replace(',', "\\,")
        .replace('=', "\\=")
        .replace(' ', "\\ ")
}

/// Points every 10 s from -95 s to 0 s (some outside a 1m range), per host: cpu-total and cpu0
/// idle, a byte counter that resets once on host 1, and a mem line without the `dc` tag on
/// half the hosts.
fn data() -> String {
    let mut text = String::new();
    for (h, host) in HOSTS.iter().enumerate() {
        let host = lp_tag(host);
        let dc = if h % 2 == 0 { ",dc=east" } else { "" };
        let mut counter: i64 = 1000 * h as i64;
        for k in 0..10i64 {
            let t = NOW - 95 * S + k * 10 * S + h as i64 * 1_000_000;
            let hf = h as f64;
            let kf = k as f64;
            text += &format!(
                "cpu,host={host},cpu=cpu-total{dc} usage_idle={} {t}\n",
                50.0 + hf * 7.0 + kf * 1.37 + (kf * kf) * 0.11
            );
            text += &format!(
                "cpu,host={host},cpu=cpu0{dc} usage_idle={} {t}\n",
                20.0 + kf * 3.1 + hf
            );
            counter = if h == 1 && k == 6 {
                5
            } else {
                counter + 100 * (k + 1) + h as i64
            };
            text += &format!("net,host={host},interface=eth0 bytes_recv={counter}i {t}\n");
            text += &format!(
                "mem,host={host}{dc} used_percent={} {t}\n",
                40.0 + hf + kf * 0.5
            );
        }
    }
    text
}

struct Backends {
    _influxd: Influxd,
    _vm: VictoriaMetrics,
    _runtime: tokio::runtime::Runtime,
    influx: Arc<dyn QuerySource>,
    memory: Arc<dyn QuerySource>,
    vm: Arc<dyn QuerySource>,
}

/// A VictoriaMetrics holding `text`, written as the agent writes it (`/write?db=…`). The
/// points are from 2023: a retention of 100 years keeps VictoriaMetrics from dropping them.
fn victoria_with(text: &str) -> Option<VictoriaMetrics> {
    let vm = VictoriaMetrics::start_with(&["-retentionPeriod=100y"])?;
    let mut r = http()
        .post(&format!("{}/write?db={DB}", vm.url()))
        .send(text)
        .expect("write to VictoriaMetrics");
    assert_eq!(
        r.status().as_u16(),
        204,
        "{:?}",
        r.body_mut().read_to_string()
    );
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    let got: usize = vm
        .export_until("{__name__=~\".+\"}", lines)
        .iter()
        .map(|s| s.1.len())
        .sum();
    assert_eq!(got, lines, "VictoriaMetrics holds every point written");
    Some(vm)
}

fn vm_source(vm: &VictoriaMetrics, runtime: &tokio::runtime::Runtime) -> Arc<dyn QuerySource> {
    Arc::new(
        VictoriaMetricsSource::new(
            VictoriaMetricsConfig {
                url: vm.url(),
                database: Some(DB.into()),
                auth: InfluxAuth::None,
                timeout: Duration::from_secs(10),
            },
            runtime.handle().clone(),
        )
        .expect("source"),
    )
}

fn backends() -> Option<Backends> {
    let influxd = Influxd::start()?;
    influxd.create_database(DB);
    let text = data();
    influxd.write(DB, &text);
    let vm = victoria_with(&text)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let influx = InfluxDbSource::new(
        InfluxDbConfig {
            url: influxd.url.clone(),
            database: DB.into(),
            retention_policy: None,
            auth: InfluxAuth::None,
            timeout: Duration::from_secs(10),
        },
        runtime.handle().clone(),
    )
    .expect("source");
    let memory = MemorySource::from_line_protocol(&text, 0).expect("parse data");
    Some(Backends {
        _influxd: influxd,
        vm: vm_source(&vm, &runtime),
        _vm: vm,
        _runtime: runtime,
        influx: Arc::new(influx),
        memory: Arc::new(memory),
    })
}

/// The memory source's answer as VictoriaMetrics gives it: every number a float, except
/// `count`.
fn as_floats(series: &[Series], agg: &Aggregate) -> Vec<Series> {
    let mut out = series.to_vec();
    if *agg != Aggregate::Count {
        for v in out
            .iter_mut()
            .flat_map(|s| &mut s.rows)
            .flat_map(|r| &mut r.values)
            .flatten()
        {
            if let Value::Int(i) = v {
                *v = Value::Float(*i as f64);
            }
        }
    }
    out
}

fn close(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Float(x)), Some(Value::Float(y))) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

fn same_series(what: &str, influx: &[Series], memory: &[Series]) {
    let show = || format!("{what}\nfirst:  {influx:#?}\nmemory: {memory:#?}");
    assert_eq!(influx.len(), memory.len(), "{}", show());
    for (i, m) in influx.iter().zip(memory) {
        assert_eq!(i.tags, m.tags, "{}", show());
        assert_eq!(i.columns, m.columns, "{}", show());
        assert_eq!(i.rows.len(), m.rows.len(), "{}", show());
        for (ri, rm) in i.rows.iter().zip(&m.rows) {
            assert_eq!(ri.time, rm.time, "{}", show());
            assert_eq!(ri.values.len(), rm.values.len(), "{}", show());
            for (vi, vm) in ri.values.iter().zip(&rm.values) {
                assert!(close(vi, vm), "{vi:?} != {vm:?}\n{}", show());
            }
        }
    }
}

fn query(measurement: &str, field: &str, agg: Aggregate) -> Query {
    let mut q = Query::new(measurement);
    q.field = Some(field.into());
    q.aggregate = agg;
    q
}

fn filter(tag: &str, value: &str, negate: bool) -> TagFilter {
    TagFilter {
        tag: tag.into(),
        value: value.into(),
        negate,
    }
}

#[test]
fn influxdb_victoriametrics_and_memory_source_agree_on_every_query_shape() {
    let Some(b) = backends() else { return };
    let sec = Duration::from_secs(1);
    let aggregates = [
        Aggregate::Raw,
        Aggregate::Mean,
        Aggregate::Max,
        Aggregate::Min,
        Aggregate::Last,
        Aggregate::Sum,
        Aggregate::Count,
        Aggregate::Percentile(50.0),
        Aggregate::Percentile(95.0),
        Aggregate::Percentile(5.0),
    ];
    let mut cases = Vec::new();
    for agg in aggregates {
        let mut q = query("cpu", "usage_idle", agg.clone());
        q.filters.push(filter("cpu", "cpu-total", false));
        q.group_by = vec!["host".into()];
        cases.push(q);
        // Several series per group (cpu-total and cpu0 merged), tags absent on some series.
        let mut q = query("cpu", "usage_idle", agg);
        q.group_by = vec!["host".into(), "dc".into()];
        q.range = Duration::from_secs(45);
        cases.push(q);
    }
    // An integer field: the selectors, sum and count are integers from both (InfluxDB's
    // JSON cannot say so: the source asks SHOW FIELD KEYS); mean is a float. The float
    // fields above have integral values too (mem 40.0, 41.0...), which must stay floats.
    for agg in [
        Aggregate::Raw,
        Aggregate::Last,
        Aggregate::Max,
        Aggregate::Min,
        Aggregate::Sum,
        Aggregate::Count,
        Aggregate::Percentile(50.0),
        Aggregate::Mean,
    ] {
        let mut q = query("net", "bytes_recv", agg);
        q.group_by = vec!["host".into()];
        q.range = Duration::from_secs(45);
        cases.push(q);
    }
    for non_negative in [false, true] {
        for unit in [sec, Duration::from_secs(60)] {
            let mut q = query(
                "net",
                "bytes_recv",
                Aggregate::Derivative { unit, non_negative },
            );
            q.group_by = vec!["host".into(), "interface".into()];
            q.range = Duration::from_secs(120);
            cases.push(q);
        }
    }
    // where_not, no group_by (one series over everything), missing tags, and nothing matched.
    let mut q = query("cpu", "usage_idle", Aggregate::Mean);
    q.filters.push(filter("cpu", "cpu0", true));
    cases.push(q);
    let mut q = query("mem", "used_percent", Aggregate::Max);
    q.filters.push(filter("dc", "", false));
    q.group_by = vec!["host".into(), "dc".into()];
    cases.push(q);
    let mut q = query("mem", "used_percent", Aggregate::Last);
    q.filters.push(filter("host", "nobody", false));
    cases.push(q);
    let mut q = query("nosuchmeasurement", "x", Aggregate::Mean);
    q.group_by = vec!["host".into()];
    cases.push(q);
    // where_match (InfluxQL `=~`, a `/` in the pattern, a missing tag as "") and where_in.
    for pattern in ["^web", "[0-9]$", "^$", "b/|east"] {
        for tag in ["host", "dc"] {
            let mut q = query("mem", "used_percent", Aggregate::Max);
            q.matches.push(TagMatch::Regex {
                tag: tag.into(),
                re: compile_regex(pattern).unwrap(),
            });
            q.group_by = vec!["host".into()];
            cases.push(q);
        }
    }
    let mut q = query("cpu", "usage_idle", Aggregate::Last);
    q.matches.push(TagMatch::In {
        tag: "host".into(),
        values: HOSTS.iter().take(2).map(|h| h.to_string()).collect(),
    });
    q.matches.push(TagMatch::In {
        tag: "cpu".into(),
        values: vec!["cpu0".into(), "nothing".into()],
    });
    q.group_by = vec!["host".into(), "cpu".into()];
    cases.push(q);

    for q in &cases {
        let text = q.to_influxql(None, NOW).unwrap();
        let i = b
            .influx
            .query(q, NOW)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let m = b
            .memory
            .query(q, NOW)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        same_series(&text, &i, &m);
        // Not only equal: of the same type (close() compares floats approximately).
        let types = |s: &[Series]| -> Vec<String> {
            s.iter()
                .flat_map(|s| &s.rows)
                .flat_map(|r| &r.values)
                .map(|v| format!("{:?}", v.as_ref().map(std::mem::discriminant)))
                .collect()
        };
        assert_eq!(types(&i), types(&m), "{text}");
        let v =
            b.vm.query(q, NOW)
                .unwrap_or_else(|e| panic!("VictoriaMetrics, {text}: {e}"));
        let m = as_floats(&m, &q.aggregate);
        same_series(&format!("VictoriaMetrics, {text}"), &v, &m);
        assert_eq!(types(&v), types(&m), "VictoriaMetrics, {text}");
    }
}

#[test]
fn hostile_tag_values_select_exactly_their_host() {
    let Some(b) = backends() else { return };
    for host in HOSTS {
        let mut q = query("cpu", "usage_idle", Aggregate::Count);
        q.filters.push(filter("host", host, false));
        q.group_by = vec!["host".into()];
        let i = b.influx.query(&q, NOW).unwrap();
        assert_eq!(i.len(), 1, "{host}: {i:?}");
        assert_eq!(i[0].tags["host"], host);
        same_series(host, &i, &b.memory.query(&q, NOW).unwrap());
        same_series(host, &b.vm.query(&q, NOW).unwrap(), &i);
    }
    for attack in [
        "nobody' OR host != '",
        "nobody\\' OR host != \\'",
        "web1'\nSELECT * FROM cpu",
    ] {
        let mut q = query("cpu", "usage_idle", Aggregate::Count);
        q.filters.push(filter("host", attack, false));
        let i = b.influx.query(&q, NOW).unwrap();
        assert!(i.is_empty(), "{attack:?} matched: {i:?}");
        let v = b.vm.query(&q, NOW).unwrap();
        assert!(v.is_empty(), "{attack:?} matched in VictoriaMetrics: {v:?}");
        // The same attacks as regexes and lists.
        q.filters.clear();
        q.matches = vec![TagMatch::In {
            tag: "host".into(),
            values: vec![attack.into()],
        }];
        assert!(b.vm.query(&q, NOW).unwrap().is_empty(), "{attack:?}");
        assert!(b.influx.query(&q, NOW).unwrap().is_empty(), "{attack:?}");
    }
}

const RULE: &str = r#"
rule(#{ every: "10s", "for": "1m" });

fn check() {
    let cpu = query("cpu").field("usage_idle").where("cpu", "cpu-total")
                 .range("1m").mean().group_by("host").run();
    for s in cpu {
        let busy = 100.0 - s.value;
        s.value = busy;
        s.warn(busy > 30.0, busy < 25.0);
        s.crit(busy > 40.0);
    }
    let rates = query("net").field("bytes_recv").range("2m")
                   .non_negative_derivative("1s").group_by("host", "interface").run();
    for r in rates {
        r.set("rate", r.value);
        r.info(r.value > 40.0);
        cpu.push(r);
    }
    cpu
}
"#;

fn observations(source: &Arc<dyn QuerySource>, text: &str) -> Vec<Observation> {
    let rule = load_rule_source("both.rhai", text).expect("rule loads");
    match rule.evaluate(source, NOW) {
        CycleResult::Observed(o) => o,
        CycleResult::Failed(m) => panic!("evaluation failed: {m}"),
    }
}

/// Numbers equal up to rounding, an integer equal to the same float (VictoriaMetrics gives
/// integer fields as floats); anything else exactly.
fn same_number(a: &Value, b: &Value) -> bool {
    let f = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    };
    match (f(a), f(b)) {
        (Some(x), Some(y)) => close(&Some(Value::Float(x)), &Some(Value::Float(y))),
        _ => a == b,
    }
}

fn same_observations(what: &str, got: &[Observation], want: &[Observation]) {
    assert_eq!(got.len(), want.len(), "{what}\n{got:#?}\nvs\n{want:#?}");
    for (og, ow) in got.iter().zip(want) {
        assert_eq!(og.tags, ow.tags, "{what}");
        assert_eq!(og.measurement, ow.measurement, "{what}");
        assert_eq!(og.time, ow.time, "{what}");
        assert_eq!(og.levels, ow.levels, "{what}: {og:?} vs {ow:?}");
        assert_eq!(
            og.fields.keys().collect::<Vec<_>>(),
            ow.fields.keys().collect::<Vec<_>>(),
            "{what}"
        );
        for (k, v) in &og.fields {
            assert!(
                same_number(v, &ow.fields[k]),
                "{what}: {k}: {og:?} vs {ow:?}"
            );
        }
    }
}

#[test]
fn a_rule_observes_the_same_from_all_three_backends() {
    let Some(b) = backends() else { return };
    let i = observations(&b.influx, RULE);
    let m = observations(&b.memory, RULE);
    let v = observations(&b.vm, RULE);
    assert_eq!(i.len(), HOSTS.len() * 2, "{i:#?}");
    same_observations("InfluxDB", &i, &m);
    same_observations("VictoriaMetrics", &v, &m);
    // Some instance of each level, so the comparison covers them.
    assert!(
        i.iter().any(|o| o.levels.warn.is_some_and(|c| c.matched)),
        "{i:#?}"
    );
}

/// The rule files shipped in examples/rules run unchanged on all three backends, with the
/// same observations over the same points (or the same failure).
#[test]
fn every_example_rule_observes_the_same_from_all_three_backends() {
    let Some(b) = backends() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/rules")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    files.sort();
    let mut observed = 0;
    for f in &files {
        let rule = wk_alerter::app::load_rule(f, None).unwrap_or_else(|e| panic!("{e}"));
        let run = |s: &Arc<dyn QuerySource>| match rule.evaluate(s, NOW) {
            CycleResult::Observed(o) => Ok(o),
            CycleResult::Failed(e) => Err(e.message),
        };
        let name = f.display();
        match (run(&b.memory), run(&b.influx), run(&b.vm)) {
            (Ok(m), Ok(i), Ok(v)) => {
                same_observations(&format!("{name} on InfluxDB"), &i, &m);
                same_observations(&format!("{name} on VictoriaMetrics"), &v, &m);
                observed += m.len();
            }
            (m, i, v) => panic!("{name}: memory {m:?}\nInfluxDB {i:?}\nVictoriaMetrics {v:?}"),
        }
    }
    // The test data feeds some of them (cpu, mem): the comparison is not only of empty results.
    assert!(observed >= HOSTS.len() * 2, "{observed}");
}

#[test]
fn influxql_and_server_errors_reach_the_rule() {
    let Some(b) = backends() else { return };
    let raw = r#"fn check() {
    let s = influxql("SELECT max(\"used_percent\") AS \"peak\", min(\"used_percent\") AS \"low\" FROM \"mem\" WHERE time > now() - 1000w GROUP BY \"host\"");
    for x in s { x.crit(x.get("peak") - x.get("low") > 4.0); }
    s
}"#;
    let obs = observations(&b.influx, raw);
    assert_eq!(obs.len(), HOSTS.len());
    let web1 = obs.iter().find(|o| o.tags["host"] == "web1").expect("web1");
    assert_eq!(web1.fields["peak"], Value::Float(40.0 + 4.5));
    assert_eq!(web1.fields["value"], Value::Float(40.0 + 4.5));
    assert_eq!(web1.fields["low"], Value::Float(40.0));
    assert!(web1.levels.crit.is_some_and(|c| c.matched));

    let rule = load_rule_source(
        "bad.rhai",
        "fn check() {\n  influxql(\"SELECT max( FROM cpu\")\n}",
    )
    .unwrap();
    let CycleResult::Failed(EvalFailure { message: m, .. }) = rule.evaluate(&b.influx, NOW) else {
        panic!("a bad statement must fail the cycle")
    };
    assert!(m.starts_with("bad.rhai:2:3: InfluxDB error: "), "{m}");
    assert!(m.contains("error parsing query"), "{m}");
    // VictoriaMetrics has no InfluxQL: the rule's evaluation (and `check`) says so, with the
    // call's position.
    let CycleResult::Failed(EvalFailure { message: m, .. }) = rule.evaluate(&b.vm, NOW) else {
        panic!("influxql() on VictoriaMetrics must fail the cycle")
    };
    assert!(
        m.starts_with("bad.rhai:2:3: influxql() needs an InfluxDB source"),
        "{m}"
    );

    // influxql() is read-only: a rule cannot drop the database (InfluxDB 1.6 would execute a
    // DROP sent as GET, so the alerter refuses it before sending).
    let rule = load_rule_source(
        "drop.rhai",
        &format!("fn check() {{ influxql(\"DROP DATABASE {DB}\") }}"),
    )
    .unwrap();
    let CycleResult::Failed(EvalFailure { message: m, .. }) = rule.evaluate(&b.influx, NOW) else {
        panic!("DROP must be refused")
    };
    assert!(m.contains("only read-only statements"), "{m}");
    let mut q = query("cpu", "usage_idle", Aggregate::Count);
    q.filters.push(filter("host", "web1", false));
    assert_eq!(
        b.influx.query(&q, NOW).unwrap().len(),
        1,
        "the data is still there"
    );
}

#[test]
fn basic_auth_against_influxdb_with_authentication_on() {
    let Some(influxd) = Influxd::start_with_auth("admin", "s3cret") else {
        return;
    };
    influxd.create_database(DB);
    influxd.write(DB, "mem,host=web1 used_percent=91.5 1699999990000000000\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let source = |password: &str| -> Arc<dyn QuerySource> {
        Arc::new(
            InfluxDbSource::new(
                InfluxDbConfig {
                    url: influxd.url.clone(),
                    database: DB.into(),
                    retention_policy: Some("autogen".into()),
                    auth: InfluxAuth::Basic {
                        username: "admin".into(),
                        password: password.into(),
                    },
                    timeout: Duration::from_secs(10),
                },
                runtime.handle().clone(),
            )
            .expect("source"),
        )
    };
    let rule = "fn check() {\n  let m = query(\"mem\").field(\"used_percent\").last().group_by(\"host\").run();\n  for s in m { s.crit(s.value > 90.0); }\n  m\n}";
    let obs = observations(&source("s3cret"), rule);
    assert_eq!(obs.len(), 1);
    assert!(obs[0].levels.crit.is_some_and(|c| c.matched));
    let loaded = load_rule_source("auth.rhai", rule).unwrap();
    let CycleResult::Failed(EvalFailure { message: m, .. }) =
        loaded.evaluate(&source("wrong"), NOW)
    else {
        panic!("a wrong password must fail the cycle")
    };
    assert!(
        m.contains("HTTP 401") && m.contains("authorization failed"),
        "{m}"
    );
}
