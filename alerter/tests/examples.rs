//! Every alerter example config loads, and every example rule loads and names only notifiers
//! that config defines.

use std::path::Path;

use wk_alerter::config;
use wk_alerter::rules::load_rule;

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_config_and_rule_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let confs = files(&root.join("examples/alerter"), "conf");
    assert!(!confs.is_empty());
    let no_env = |_: &str| None;
    for c in &confs {
        let cfg = config::load(c, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.warnings.is_empty(),
            "{}: {:?}",
            c.display(),
            cfg.warnings
        );
        let rules_dir = root.join(&cfg.settings.rules_dir);
        let rules = files(&rules_dir, "rhai");
        assert!(!rules.is_empty(), "{}", rules_dir.display());
        for r in &rules {
            let rule = load_rule(r).unwrap_or_else(|e| panic!("{e}"));
            cfg.notify
                .validate_names(&rule.settings().notify)
                .unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        }
        // `wk-alerter check` passes them: each runs once on sample data without failing
        // (without the config: its actions name directories of the deployed machine).
        let mut out = Vec::new();
        let opts = wk_alerter::app::CheckOptions::default();
        assert!(
            wk_alerter::app::check(None, &rules, &opts, &mut out),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// `wk-alerter test RULE --data FILE.lp` prints the events of a simulated run: the example
/// CPU rule over the recorded two-host data fires for the busy host only, then (with a tail)
/// both go NoData when the recording ends.
#[test]
fn test_command_replays_recorded_data_with_a_simulated_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .args([
            "test",
            "examples/rules/cpu_high.rhai",
            "--data",
            "alerter/testdata/rules/hosts.lp",
            "--json",
        ])
        .args(["--tail", "2m"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alerts: Vec<_> = events.iter().filter(|e| e["kind"] == "alert").collect();
    assert_eq!(alerts.len(), 1, "{events:?}");
    assert_eq!(alerts[0]["tags"]["host"], "web2");
    assert_eq!(alerts[0]["level"], "CRITICAL");
    let nodata = events.iter().filter(|e| e["kind"] == "no_data").count();
    assert_eq!(nodata, 2, "{events:?}");

    // A broken rule is a clear error with its line, exit status 2.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rhai");
    std::fs::write(&bad, "fn check() {\n  query(\"cpu\").run(\n}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .args(["test", bad.to_str().unwrap(), "--data"])
        .arg(root.join("alerter/testdata/rules/hosts.lp"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.rhai:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The self-healing demo (scripts/demo), run as a newcomer would, on this build's binaries
/// and free ports: the web server killed, its port squatted, a CPU hog; each is detected,
/// acted on, verified and reported (the script exits 0 only then; each fault has 60 s).
#[test]
fn the_demo_heals_a_killed_server_a_squatted_port_and_reports_a_cpu_hog() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = crate::tools::agent_binary().parent().unwrap().to_owned();
    let [listen, port] = wk_core::testing::free_ports::<2>();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(root.join("scripts/demo"))
        .env("WK_BIN_DIR", &bin_dir)
        .env("WK_DEMO_LISTEN", format!("127.0.0.1:{listen}"))
        .env("WK_DEMO_PORT", port.to_string())
        .env("WK_STATE_DIR", state.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let logs = ["alerter.log", "agent.log"]
        .map(|f| std::fs::read_to_string(state.path().join(f)).unwrap_or_default());
    assert!(
        out.status.success(),
        "{text}\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs[0],
        logs[1]
    );
    for want in [
        "healed in",
        "the squatter was named and stopped",
        "demo-squatter",
        "exited after SIGTERM",
        "top 5 by cpu",
        "demo-cpu-hog",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}

/// The demo's configs load with the demo's environment, and its rules with their notifiers.
#[test]
fn demo_configs_and_rules_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("examples/demo");
    let env = |k: &str| (k == "WK_STREAM_TOKEN").then(|| "demo-token-0123456789".to_owned());
    let cfg = config::load(&dir.join("alerter.conf"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let rules = files(&root.join(&cfg.settings.rules_dir), "rhai");
    assert_eq!(rules.len(), 2);
    for r in rules {
        let rule = load_rule(&r).unwrap_or_else(|e| panic!("{e}"));
        cfg.notify
            .validate_names(&rule.settings().notify)
            .unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        cfg.actions
            .validate_rule(rule.settings())
            .unwrap_or_else(|(_, e)| panic!("{}: {e}", r.display()));
    }
    let req = wk_agent::config::LoadRequest {
        env: &env,
        ..wk_agent::config::LoadRequest::new(vec![dir.join("agent.conf")])
    };
    let plan = wk_agent::config::load(&req).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

/// The quick start (scripts/quickstart): the alerter config in stream mode with every example
/// rule resolving its notifiers, and the agent config (loaded by the agent's own loader)
/// writing to the alerter's stream address.
#[test]
fn quickstart_configs_load_and_point_at_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("examples/quickstart");
    let env = |k: &str| (k == "WK_STREAM_TOKEN").then(|| "quickstart-token".to_owned());
    let alerter = dir.join("alerter.conf");
    let cfg = config::load(&alerter, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let stream = cfg.stream.as_ref().expect("[stream] in the quick start");
    assert_eq!(stream.token, "quickstart-token");
    let rules = files(&root.join(&cfg.settings.rules_dir), "rhai");
    assert!(!rules.is_empty());
    // Paths in the quick start are relative to the repository root, where it runs.
    let mut actions = cfg.actions.clone();
    actions.scripts_dir = root.join(&actions.scripts_dir);
    for r in rules {
        let rule = load_rule(&r).unwrap_or_else(|e| panic!("{e}"));
        cfg.notify
            .validate_names(&rule.settings().notify)
            .unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        // What the running alerter checks too: a run_script name must be in scripts_dir.
        actions
            .validate_rule(rule.settings())
            .unwrap_or_else(|(_, e)| panic!("{}: {e}", r.display()));
    }
    // Without the token the alerter refuses to start (listening endpoints take a token).
    let no_env = |_: &str| None;
    let err = config::load(&alerter, &no_env).unwrap_err().to_string();
    assert!(
        err.contains("WK_STREAM_TOKEN") && err.contains("not set"),
        "{err}"
    );

    let agent = dir.join("agent.conf");
    let req = wk_agent::config::LoadRequest {
        configs: vec![agent.clone()],
        config_dirs: Vec::new(),
        input_filter: None,
        output_filter: None,
        env: &env,
        paths: Default::default(),
        test_mode: false,
        stats: Default::default(),
    };
    let plan = wk_agent::config::load(&req).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert!(plan.inputs.len() >= 8);
    assert_eq!(plan.outputs.len(), 1);
    let text = std::fs::read_to_string(&agent).unwrap();
    assert!(
        text.contains(&format!("urls = [\"http://{}\"]", stream.listen)),
        "the agent writes to the alerter's [stream] listen address"
    );
}

/// Every recording under examples/recorded names the rule it is for in its header
/// (`wk-alerter test RULE --data FILE`), parses as `wk-agent --test` output and, replayed,
/// raises alerts and recovers.
#[test]
fn every_recorded_example_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let recordings = files(&root.join("examples/recorded"), "lp");
    assert!(!recordings.is_empty());
    for rec in recordings {
        let text = std::fs::read_to_string(&rec).unwrap();
        let rule = text
            .lines()
            .find_map(|l| l.split("wk-alerter test ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{}: no 'wk-alerter test RULE' line", rec.display()));
        let rule = wk_alerter::app::load_rule(&root.join(rule), None)
            .unwrap_or_else(|e| panic!("{}: {e}", rec.display()));
        let points = wk_core::lineproto::parse(&text, 0).unwrap();
        let steps = wk_alerter::app::replay(&rule, &points, std::time::Duration::ZERO);
        assert!(
            steps.iter().all(|s| s.failure.is_none()),
            "{}",
            rec.display()
        );
        let kinds: Vec<String> = steps
            .iter()
            .flat_map(|s| &s.events)
            .map(|(e, _)| format!("{:?}", e.kind))
            .collect();
        assert!(
            kinds.first().is_some_and(|k| k == "Alert") && kinds.iter().any(|k| k == "Recovery"),
            "{}: {kinds:?}",
            rec.display()
        );
    }
}

/// Every file under examples/ is one of the kinds the tests load (so a new example cannot
/// ship unchecked): agent and alerter configs, rules, recordings, Grafana dashboards, and the
/// READMEs that explain them.
#[test]
fn every_example_file_is_of_a_kind_the_tests_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let checked = |rel: &str| {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
        matches!(
            (dir, ext),
            ("agent" | "alerter" | "quickstart" | "demo", "conf")
                | ("rules" | "demo/rules", "rhai")
                | ("recorded", "lp")
                | ("grafana", "json")
                | (_, "md")
        )
    };
    let mut stack = vec![root.clone()];
    let mut unchecked = Vec::new();
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            n += 1;
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !checked(&rel) {
                unchecked.push(rel);
            }
        }
    }
    assert!(n > 20);
    assert!(
        unchecked.is_empty(),
        "files under examples/ no test loads: {unchecked:?}"
    );
}

/// Every Grafana dashboard under examples/grafana is an importable JSON model: unique uid,
/// no fixed id, the InfluxDB datasource variable used by every panel, unique panel ids that
/// fit the 24-column grid, raw InfluxQL limited to the dashboard's time range. (That each
/// query returns data from the real agent and alerter is `dashboards::every_panel_...`.)
#[test]
fn grafana_dashboards_are_importable_models() {
    let mut uids = std::collections::BTreeSet::new();
    let files = crate::dashboards::dashboard_files();
    assert!(!files.is_empty());
    for f in files {
        let name = f.display().to_string();
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid:?}");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(d["id"].is_null(), "{name}: a fixed id breaks imports");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
        assert!(d["schemaVersion"].as_u64().is_some(), "{name}");
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "influxdb"),
            "{name}: no InfluxDB datasource variable"
        );
        let mut ids = std::collections::BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: panel id {} twice",
                p["id"]
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && g["h"].as_u64().unwrap() > 0,
                "{name}: {}",
                p["title"]
            );
            if p["type"] != "row" {
                assert_eq!(
                    p["datasource"]["uid"], "${datasource}",
                    "{name}: {}",
                    p["title"]
                );
            }
        }
        let (_, queries) = crate::dashboards::queries(&d);
        for q in queries {
            assert!(
                q.text.contains("$timeFilter"),
                "{name} {}: no $timeFilter",
                q.place
            );
            if q.text.contains("GROUP BY time(") {
                assert!(
                    q.text.contains("GROUP BY time($__interval)"),
                    "{name} {}: a fixed interval ignores the zoom",
                    q.place
                );
            }
        }
    }
}
