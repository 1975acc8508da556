//! The Grafana dashboards shipped under examples/grafana against real data: a real influxd
//! filled by the real wk-agent (the inputs the host dashboard draws) and the real wk-alerter
//! (an alert written by the influxdb notifier, an action recorded in `wk_actions`); then every
//! InfluxQL query of every panel, annotation and variable of every dashboard runs with the
//! Grafana macros substituted as Grafana does, and each must return data.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::heal::stack::{DB, Stack};

/// Every dashboard JSON under examples/grafana, sorted.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Where a query sits in a dashboard, for failure messages.
#[derive(Debug, Clone)]
pub struct Query {
    pub place: String,
    pub text: String,
}

/// The InfluxQL of a dashboard: template variables first (in order: later ones may use
/// earlier ones), then annotations, then every target of every panel (rows' nested panels
/// included). Fails on a panel target that is not raw InfluxQL over the datasource variable:
/// a query-builder target would be a query this test does not run.
pub fn queries(dash: &Value) -> (Vec<(String, Query)>, Vec<Query>) {
    let mut vars = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let text = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .unwrap_or_else(|| panic!("variable {} has no query", v["name"]));
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            vars.push((
                name.clone(),
                Query {
                    place: format!("variable {name}"),
                    text: text.to_owned(),
                },
            ));
        }
    }
    let mut out = Vec::new();
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = a["query"].as_str() {
            out.push(Query {
                place: format!("annotation {}", a["name"]),
                text: q.to_owned(),
            });
        }
    }
    let mut panels: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    let mut i = 0;
    while i < panels.len() {
        let p = panels[i];
        panels.extend(p["panels"].as_array().into_iter().flatten());
        i += 1;
    }
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let place = format!("panel {} target {}", p["title"], t["refId"]);
            assert_eq!(t["rawQuery"], true, "{place}: not a raw InfluxQL query");
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &p["datasource"]
            };
            assert_eq!(
                (&ds["type"], &ds["uid"]),
                (&Value::from("influxdb"), &Value::from("${datasource}")),
                "{place}: the datasource must be the dashboard's InfluxDB variable"
            );
            let text = t["query"]
                .as_str()
                .unwrap_or_else(|| panic!("{place}: no query"));
            out.push(Query {
                place,
                text: text.to_owned(),
            });
        }
    }
    (vars, out)
}

/// Substitutes what Grafana substitutes before sending a query to InfluxDB: `$timeFilter`,
/// `$__interval` (the interval Grafana picks for the panel width; 10 s, the agent's), and each
/// variable as `$name`, `${name}` and `[[name]]` (a single value inside a regex is escaped).
pub fn substitute(q: &str, vars: &[(String, String)]) -> String {
    let mut s = q
        .replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "10s");
    // Longest names first, so `$host` does not eat the start of `$hostname`.
    let mut vars: Vec<&(String, String)> = vars.iter().collect();
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (name, value) in vars {
        let escaped: String = value
            .chars()
            .flat_map(|c| {
                let special = "\\^$.|?*+()[]{}/".contains(c);
                special
                    .then_some('\\')
                    .into_iter()
                    .chain(std::iter::once(c))
            })
            .collect();
        s = s
            .replace(&format!("/^${name}$/"), &format!("/^{escaped}$/"))
            .replace(&format!("/^${{{name}}}$/"), &format!("/^{escaped}$/"))
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    s
}

/// Whether `q` still has a Grafana macro or variable (`$name`, `${name}`, `[[name]]`); the
/// `$` that ends a regex is not one.
fn has_macro(q: &str) -> bool {
    q.contains("[[")
        || q.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] == b'{'))
}

/// Runs `q` against influxd: Ok(rows with a non-null value), or the error InfluxDB gave.
fn run(st: &Stack, q: &str) -> Result<Vec<Vec<Value>>, String> {
    let path = format!(
        "/query?db={DB}&epoch=ms&q={}",
        crate::common::influxd::urlencode(q)
    );
    let (status, body) = st.db().http("GET", &path, "").map_err(|e| e.to_string())?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {body}: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_owned());
    }
    let mut rows = Vec::new();
    for r in v["results"].as_array().into_iter().flatten() {
        if let Some(e) = r["error"].as_str() {
            return Err(e.to_owned());
        }
        for series in r["series"].as_array().into_iter().flatten() {
            let cols = series["columns"].as_array().map_or(0, Vec::len);
            let skip = usize::from(series["columns"][0] == "time" && cols > 1);
            for row in series["values"].as_array().into_iter().flatten() {
                let row = row.as_array().cloned().unwrap_or_default();
                if row.iter().skip(skip).any(|x| !x.is_null()) {
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

const T: Duration = Duration::from_secs(90);

/// A rule that always fires on the agent's data (every host has CPUs) and runs the
/// diagnostic action that changes nothing: an alert event and a `wk_actions` point.
const ACTION_RULE: &str = r#"
rule(#{
    every: "1s",
    notify: ["alerts-db", "log"],
    message: "{{host}}: {{value}} CPUs",
    actions: [#{ action: "top_processes", by: "cpu", n: 3, on: "CRITICAL" }],
});

fn check() {
    let s = query("system").field("n_cpus").range("1m").last().group_by("host").run();
    for x in s {
        x.crit(x.value > 0.0);
    }
    s
}
"#;

/// A rule without actions, so the alert itself (not only the action report) is written.
const ALERT_RULE: &str = r#"
rule(#{
    every: "1s",
    notify: ["alerts-db", "log"],
    message: "{{host}}: memory {{value:.0}}% used",
});

fn check() {
    let s = query("mem").field("used_percent").range("1m").last().group_by("host").run();
    for x in s {
        x.warn(x.value > 0.0);
    }
    s
}
"#;

#[test]
fn every_panel_query_of_every_shipped_dashboard_returns_data() {
    let Some(mut st) = Stack::new("", "") else {
        return;
    };
    let url = st.db().url.clone();
    let port = st.db().port;
    let conf = st.dir.path().join("alerter.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\n[[notifiers.influxdb]]\n  name = \"alerts-db\"\n  url = \"{url}\"\n  database = \"{DB}\"\n"
    ));
    std::fs::write(&conf, text).unwrap();
    st.rule("cpus.rhai", ACTION_RULE);
    st.rule("mem.rhai", ALERT_RULE);
    // The inputs the host dashboard draws; the service checks probe influxd itself.
    let inputs = format!(
        "[[inputs.cpu]]\n[[inputs.mem]]\n[[inputs.swap]]\n[[inputs.disk]]\n[[inputs.diskio]]\n\
         [[inputs.net]]\n[[inputs.netstat]]\n[[inputs.system]]\n\
         [[inputs.ping]]\n  urls = [\"127.0.0.1\"]\n  count = 1\n\
         [[inputs.net_response]]\n  protocol = \"tcp\"\n  address = \"127.0.0.1:{port}\"\n\
         [[inputs.http_response]]\n  urls = [\"{url}/ping\"]\n"
    );
    st.start_agent("web1", &inputs);
    st.start_alerter();

    let files = dashboard_files();
    assert!(files.len() >= 2, "{files:?}");
    let started = Instant::now();
    let mut checked = 0;
    for f in &files {
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let (var_queries, panel_queries) = queries(&dash);
        assert!(panel_queries.len() >= 5, "{}", f.display());
        // Data keeps coming in (rates need two 10 s buckets, the alerter's points come after
        // its first evaluations): poll until every query answers with data; an InfluxQL
        // error fails at once.
        let mut failures: Vec<String>;
        loop {
            failures = Vec::new();
            let mut vars: Vec<(String, String)> = Vec::new();
            for (name, q) in &var_queries {
                let text = substitute(&q.text, &vars);
                match run(&st, &text) {
                    Err(e) => panic!("{} {}: {text}: {e}", f.display(), q.place),
                    Ok(rows) => match rows.first().and_then(|r| r.last()).and_then(Value::as_str) {
                        Some(v) => vars.push((name.clone(), v.to_owned())),
                        None => failures.push(format!("{}: {text}: no values", q.place)),
                    },
                }
            }
            if failures.is_empty() {
                for q in &panel_queries {
                    let text = substitute(&q.text, &vars);
                    assert!(
                        !has_macro(&text),
                        "{} {}: unsubstituted macro in {text}",
                        f.display(),
                        q.place
                    );
                    match run(&st, &text) {
                        Err(e) => panic!("{} {}: {text}: {e}", f.display(), q.place),
                        Ok(rows) if rows.is_empty() => {
                            failures.push(format!("{}: {text}: no data", q.place))
                        }
                        Ok(_) => {}
                    }
                }
            }
            if failures.is_empty() || started.elapsed() > T {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(
            failures.is_empty(),
            "{}: empty after {T:?}:\n{}\n{}",
            f.display(),
            failures.join("\n"),
            st.logs()
        );
        checked += var_queries.len() + panel_queries.len();
    }
    eprintln!(
        "{checked} dashboard queries returned data ({:?} after the agent started)",
        started.elapsed()
    );
}

#[test]
fn grafana_macros_are_substituted_as_grafana_does() {
    let vars = [("host".to_owned(), "web.1".to_owned())];
    assert_eq!(
        substitute(
            "SELECT mean(x) FROM m WHERE \"host\" =~ /^$host$/ AND h2 = '${host}' AND $timeFilter GROUP BY time($__interval)",
            &vars
        ),
        "SELECT mean(x) FROM m WHERE \"host\" =~ /^web\\.1$/ AND h2 = 'web.1' AND time > now() - 1h GROUP BY time(10s)"
    );
}
