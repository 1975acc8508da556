//! Config loading: every example loads, Telegraf's default config loads, bad input is a
//! clear error naming file and line.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{Conf, conf};
use wk_agent::config::{self, ConfigError, LoadRequest, Plan};
use wk_agent::hostpaths::HostPaths;
use wk_agent::metric::Metric;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A load with every knob: files, directories, environment, test mode, host paths.
#[derive(Clone)]
struct Load {
    configs: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    env: HashMap<String, String>,
    test_mode: bool,
    paths: HostPaths,
}

impl Load {
    fn files(configs: &[PathBuf]) -> Load {
        Load {
            configs: configs.to_vec(),
            dirs: Vec::new(),
            env: HashMap::new(),
            test_mode: false,
            paths: HostPaths::default(),
        }
    }

    fn env(mut self, k: &str, v: &str) -> Load {
        self.env.insert(k.into(), v.into());
        self
    }

    fn test_mode(mut self) -> Load {
        self.test_mode = true;
        self
    }

    fn run(&self) -> Result<Plan, ConfigError> {
        let lookup = |k: &str| self.env.get(k).cloned();
        let req = LoadRequest {
            config_dirs: self.dirs.clone(),
            env: &lookup,
            paths: self.paths.clone(),
            test_mode: self.test_mode,
            ..LoadRequest::new(self.configs.clone())
        };
        config::load(&req)
    }
}

impl Conf {
    fn load(&self) -> Load {
        Load::files(std::slice::from_ref(&self.path))
    }
}

/// The errors of `text` loaded in test mode, which must fail, as `line:col: message`.
fn load_errors(text: &str) -> Vec<String> {
    errors(conf(text).load().test_mode().run())
}

/// The errors of a load that must fail, as `line:col: message`.
fn errors(r: Result<Plan, ConfigError>) -> Vec<String> {
    match r {
        Ok(_) => panic!("the config loaded but should not have"),
        Err(e) => e
            .errors
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect(),
    }
}

fn warnings(p: &Plan) -> Vec<String> {
    p.warnings
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect()
}

/// Loads, failing the test with every error when the config does not load.
fn load_ok(load: &Load, what: &Path) -> Plan {
    load.run()
        .unwrap_or_else(|e| panic!("{} does not load:\n{e}", what.display()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "conf") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_config_loads() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent");
    let mut found = Vec::new();
    walk(&examples, &mut found);
    found.sort();
    assert!(!found.is_empty(), "no .conf under {}", examples.display());
    for f in &found {
        // Examples may use ${VAR:-default}; give them an empty environment.
        let plan = load_ok(&Load::files(std::slice::from_ref(f)), f);
        assert!(!plan.inputs.is_empty(), "{}", f.display());
        assert!(!plan.outputs.is_empty(), "{}", f.display());
        let unexpected: Vec<_> = warnings(&plan);
        assert!(
            unexpected.is_empty(),
            "{}: examples should load without warnings: {unexpected:?}",
            f.display()
        );
    }
}

#[test]
fn telegraf_default_config_loads_with_only_the_expected_warnings() {
    let f = data("telegraf-default.conf");
    let plan = load_ok(&Load::files(std::slice::from_ref(&f)).test_mode(), &f);
    // Every [agent] key is at Telegraf's default, which is what wk-agent does anyway, and the
    // inputs and the InfluxDB output use only options Telegraf has: no warning at all.
    assert_eq!(warnings(&plan), Vec::<String>::new());
    let names: Vec<_> = plan.inputs.iter().map(|i| i.spec.name).collect();
    assert_eq!(names, config::TELEGRAF_DEFAULT_INPUTS);
    assert_eq!(plan.outputs.len(), 1, "the InfluxDB output");
    assert_eq!(
        plan.agent,
        config::AgentSettings {
            precision: std::time::Duration::from_secs(1),
            hostname: plan.agent.hostname.clone(),
            ..Default::default()
        }
    );
    // Outside test mode it runs as well: its output is the (implemented) InfluxDB one.
    let r = Load::files(std::slice::from_ref(&f)).run();
    assert!(r.is_ok(), "{}", r.err().unwrap());
}

#[test]
fn agent_options_we_do_not_implement_warn_only_when_they_ask_for_something() {
    let c = conf(
        "[agent]\n  logfile = \"\"\n  buffer_strategy = \"memory\"\n  statefile = \"/var/lib/telegraf/state.json\"\n  logfile_rotation_max_size = \"10MB\"\n  buffer_disk_sync = true\n[[inputs.cpu]]\n",
    );
    let plan = c.load().test_mode().run().unwrap();
    assert_eq!(
        warnings(&plan),
        [
            "4:15: [agent] statefile: is a Telegraf option wk-agent does not implement; ignored",
            "5:31: [agent] logfile_rotation_max_size: is a Telegraf option wk-agent does not implement; ignored",
        ]
    );
    // A wrong type is still an error, as in Telegraf.
    assert_eq!(
        load_errors("[agent]\n  buffer_disk_sync = \"maybe\"\n[[inputs.cpu]]\n"),
        ["2:22: [agent] buffer_disk_sync: expected true or false, found \"maybe\""]
    );
}

#[test]
fn real_world_config_warns_about_unimplemented_plugins_by_line() {
    let f = data("real-world.conf");
    let load = Load::files(std::slice::from_ref(&f)).env("INFLUX_PASSWORD", "s3cret");
    let plan = load_ok(&load.clone().test_mode(), &f);
    let file = f.display().to_string();
    // Every plugin of the file is implemented; its docker table uses three options older
    // Telegrafs had, read as `telegraf config migrate` rewrites them, with a warning each.
    let removed = |line: usize, col: usize, key: &str, now: &str| {
        format!(
            "{file}:{line}:{col}: warning: [inputs.docker] {key}: was removed from Telegraf (1.39 refuses it); read as {now}, as `telegraf config migrate` rewrites it"
        )
    };
    let expected = vec![
        removed(60, 21, "container_names", "container_name_include"),
        removed(63, 15, "perdevice", "perdevice_include"),
        removed(64, 11, "total", "total_include"),
    ];
    let shown: Vec<String> = plan
        .warnings
        .iter()
        .map(|d| d.to_string())
        // An implemented InfluxDB output may warn about options it leaves out.
        .filter(|w| !w.contains("[outputs.influxdb] ") || w.contains("Telegraf plugin"))
        .collect();
    assert_eq!(shown, expected);
    let names: Vec<_> = plan.inputs.iter().map(|i| i.spec.name).collect();
    assert_eq!(
        names,
        ["cpu", "mem", "swap", "disk", "net", "haproxy", "docker"]
    );
    assert_eq!(
        plan.global_tags.tags[..2],
        [
            ("env".to_string(), "production".to_string()),
            ("role".to_string(), "web".to_string())
        ]
    );
    // As the operator runs it (no --test): it needs the InfluxDB output.
    let r = load.run();
    assert!(r.is_ok(), "{}", r.err().unwrap());
}

#[test]
fn typo_in_an_option_is_an_error_at_its_line_and_column() {
    let c = conf("[[inputs.cpu]]\n  percpu = true\n    totalcpuu = false\n[[outputs.file]]\n");
    assert_eq!(
        errors(c.load().run()),
        [
            "3:5: [inputs.cpu] unknown option \"totalcpuu\": Telegraf has no such option here; did you mean \"totalcpu\"?"
        ]
    );
    // The same in [agent] and in an output.
    let c = conf(
        "[agent]\n  intervall = \"10s\"\n[[inputs.cpu]]\n[[outputs.file]]\n  file = [\"stdout\"]\n",
    );
    assert_eq!(
        errors(c.load().run()),
        [
            "2:3: [agent] unknown option \"intervall\": Telegraf has no such option here; did you mean \"interval\"?",
            "5:3: [outputs.file] unknown option \"file\": Telegraf has no such option here; did you mean \"files\"?",
        ]
    );
    // Nothing close: no suggestion.
    assert_eq!(
        load_errors("[[inputs.cpu]]\n  frobnicate = 1\n"),
        [
            "2:3: [inputs.cpu] unknown option \"frobnicate\": Telegraf has no such option here (a typo?)"
        ]
    );
}

/// Lenient where Telegraf is lenient, strict where it is strict (the three cases).
#[test]
fn leniency_matches_telegraf() {
    // Telegraf ignores an unknown kernel `collect` value and a lone tls_cert: they load, and
    // we say so.
    let c = conf(
        "[[inputs.kernel]]\n  collect = [\"pressure\"]\n[[inputs.haproxy]]\n  tls_cert = \"/etc/c.pem\"\n",
    );
    let p = load_ok(&c.load().test_mode(), &c.path);
    let w = warnings(&p);
    assert!(
        w.iter()
            .any(|w| w
                .starts_with("2:13: [inputs.kernel] collect: unknown value \"pressure\" ignored")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.starts_with(
            "4:14: [inputs.haproxy] tls_cert: tls_cert and tls_key work only together"
        )),
        "{w:?}"
    );
    // `[agent] utc` is no Telegraf 1.39 option: Telegraf refuses it, so do we.
    let c = conf("[agent]\n  utc = true\n[[inputs.cpu]]\n");
    let e = errors(c.load().test_mode().run());
    assert!(
        e[0].starts_with("2:3: [agent] unknown option \"utc\""),
        "{e:?}"
    );
}

#[test]
fn the_full_diagnostic_names_file_line_and_column() {
    let c = conf("[[inputs.cpu]]\n  percpu = \"yes\"\n");
    let e = c.load().test_mode().run().err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:12: error: [inputs.cpu] percpu: expected true or false, found \"yes\"",
            c.path.display()
        )
    );
}

#[test]
fn wrong_types_are_errors() {
    assert_eq!(
        load_errors(
            "[agent]\n  interval = true\n  metric_batch_size = \"lots\"\n  hostname = 5\n[[inputs.cpu]]\n  percpu = 1\n  totalcpu = [true]\n"
        ),
        [
            "2:14: [agent] interval: expected a duration such as \"10s\", found a boolean",
            "3:23: [agent] metric_batch_size: expected an integer",
            "4:14: [agent] hostname: expected a string, found an integer",
            "6:12: [inputs.cpu] percpu: expected a boolean, found an integer",
            "7:14: [inputs.cpu] totalcpu: expected a boolean, found an array",
        ]
    );
}

#[test]
fn bad_durations_are_errors() {
    assert_eq!(
        load_errors(
            "[agent]\n  interval = \"10 seconds\"\n  flush_interval = \"0s\"\n  collection_jitter = \"-1s\"\n  flush_jitter = \"5m5\"\n[[inputs.cpu]]\n  interval = -5\n"
        ),
        [
            "2:14: [agent] interval: invalid duration \"10 seconds\": unknown unit \" seconds\" (use ns, us, ms, s, m, h or d)",
            "3:20: [agent] flush_interval: 0ns is too short: must be at least 100ms",
            "4:23: [agent] collection_jitter: invalid duration \"-1s\": negative durations are not allowed",
            "5:18: [agent] flush_jitter: invalid duration \"5m5\": missing unit (write \"5m5s\" for seconds)",
            "7:14: [inputs.cpu] interval: invalid duration -5: must be a non-negative number of seconds",
        ]
    );
    // Numbers have the text form's bounds: a huge interval became 0 ns further on, and the
    // scheduler divided by it.
    assert_eq!(
        load_errors(
            "[agent]\n  interval = 99999999999999\n  flush_interval = 1e300\n[[inputs.cpu]]\n"
        ),
        [
            "2:14: [agent] interval: invalid duration \"99999999999999\": too large",
            "3:20: [agent] flush_interval: invalid duration 1e300",
        ]
    );
    // Integers are seconds, floats fractional seconds, "2d" days.
    let c = conf(
        "[agent]\n  interval = 30\n  flush_interval = 1.5\n  collection_offset = \"2d\"\n[[inputs.cpu]]\n",
    );
    let p = c.load().test_mode().run().unwrap();
    assert_eq!(p.agent.interval.as_secs(), 30);
    assert_eq!(p.agent.flush_interval.as_millis(), 1500);
    assert_eq!(p.agent.collection_offset.as_secs(), 2 * 86400);
    // Regression: "1ns" was accepted and gathered ~800 times a second.
    assert_eq!(
        load_errors(
            "[agent]\n  interval = \"1ns\"\n[[inputs.cpu]]\n  interval = \"50ms\"\n[[outputs.file]]\n  flush_interval = \"0.01\"\n"
        ),
        [
            "2:14: [agent] interval: 1ns is too short: must be at least 100ms",
            "4:14: [inputs.cpu] interval: 50ms is too short: must be at least 100ms",
            "6:20: [outputs.file] flush_interval: 10ms is too short: must be at least 100ms",
        ]
    );
}

#[test]
fn environment_variables_are_substituted_in_strings() {
    let c = conf(
        "[global_tags]\n  dc = \"${DC}\"\n  rack = \"$RACK-${UNSET:-r0}\"\n  literal = \"${NOT_SET}\"\n  price = \"$$5\"\n[agent]\n  hostname = \"${HOST_NAME}\"\n  metric_batch_size = \"${BATCH}\"\n[[inputs.cpu]]\n  percpu = \"${PERCPU}\"\n# a comment with ${NOT_SET:?never expanded}\n",
    );
    let p = c
        .load()
        .env("DC", "eu-west")
        .env("RACK", "r12")
        .env("HOST_NAME", "web-07")
        .env("BATCH", "500")
        .env("PERCPU", "false")
        .test_mode()
        .run()
        .unwrap();
    assert_eq!(
        p.global_tags.tags,
        [
            ("dc".to_string(), "eu-west".to_string()),
            ("rack".to_string(), "r12-r0".to_string()),
            ("literal".to_string(), "${NOT_SET}".to_string()),
            ("price".to_string(), "$5".to_string()),
            ("host".to_string(), "web-07".to_string()),
        ]
    );
    assert_eq!(p.agent.hostname, "web-07");
    // Regression: an unset variable passed silently; it is used verbatim with a warning that
    // names it (only `${NOT_SET}`: `${UNSET:-r0}` has a default).
    assert_eq!(
        warnings(&p),
        [
            "4:13: [global_tags] literal: environment variable NOT_SET is not set; the text is used verbatim"
        ]
    );
    // Deliberate difference: Telegraf's strict mode refuses "${BATCH}" for an integer; we
    // convert the substituted string, which is the only way to set a number from the
    // environment without --non-strict-env-handling.
    assert_eq!(p.agent.metric_batch_size, 500);
}

/// Regression: `password = "Pa$sw0rd"` logged "environment variable sw0rd is not set", part
/// of the password. A secret's warning names no variable and says how to write a `$`.
#[test]
fn a_dollar_in_a_secret_is_warned_about_without_quoting_it() {
    let c = conf(
        "[[inputs.cpu]]\n[[outputs.influxdb]]\n  password = \"Pa$sw0rd\"\n  username = \"$svc\"\n[outputs.influxdb.http_headers]\n  X-Api-Key = \"k3y${Tail}\"\n",
    );
    let p = c.load().run().unwrap();
    let said = warnings(&p);
    for secret in ["sw0rd", "Tail"] {
        assert!(said.iter().all(|w| !w.contains(secret)), "{said:?}");
    }
    let hint = "`$` followed by a name reads as an environment variable, and it is not set; the text is used verbatim (value not shown: it is a secret; write `$$` for a literal `$`)";
    assert_eq!(
        said,
        [
            format!("3:14: [outputs.influxdb] password: {hint}"),
            "4:14: [outputs.influxdb] username: environment variable svc is not set; the text is used verbatim".to_string(),
            format!("6:15: [outputs.influxdb.http_headers] X-Api-Key: {hint}"),
        ]
    );
}

/// The same for a password inside a URL (`urls`, `servers`, DSNs): the "variable" after a
/// `$` in the credentials is part of the secret.
#[test]
fn a_dollar_in_a_url_password_is_warned_about_without_quoting_it() {
    let c = conf(
        "[[inputs.cpu]]\n[[outputs.influxdb]]\n  urls = [\"http://svc:Pa$Zq9x@127.0.0.1:8086\"]\n",
    );
    let p = c.load().run().unwrap();
    let said = warnings(&p);
    assert!(said.iter().all(|w| !w.contains("Zq9x")), "{said:?}");
    assert!(
        said.iter()
            .any(|w| w.contains("urls: `$` followed by a name")),
        "{said:?}"
    );
}

/// Regression: `password = "@{os:influx_pw}"` (Telegraf's secret-store syntax) became the
/// password itself and every write was refused with 401; it is a load error at its line.
#[test]
fn a_secret_store_reference_is_an_error_at_its_line() {
    let c = conf(
        "[[inputs.cpu]]\n[[outputs.influxdb]]\n  password = \"@{os:influx_pw}\"\n[outputs.influxdb.http_headers]\n  X-Key = \"k-${STORE}:key}\"\n[[outputs.influxdb_v2]]\n  token = \"mail@{example.com}\"\n[secretstores.os]\n  id = \"os\"\n",
    );
    let advice = "is a Telegraf secret-store reference, and wk-agent has no secret stores: use an environment variable (\"${VAR}\") or, where the option has one, a file (password_file, token_file)";
    assert_eq!(
        errors(c.load().env("STORE", "@{vault").run()),
        [
            format!("3:14: [outputs.influxdb] password: @{{os:influx_pw}} {advice}"),
            format!("5:11: [outputs.influxdb.http_headers] X-Key: @{{vault:key}} {advice}"),
        ]
    );
}

#[test]
fn required_variable_unset_is_an_error() {
    let c = conf(
        "[[inputs.cpu]]\n[[outputs.file]]\n  files = [\"${OUT_FILE:?set OUT_FILE to the metrics file}\"]\n",
    );
    assert_eq!(
        errors(c.load().run()),
        [
            "3:11: [outputs.file] files: environment variable OUT_FILE: set OUT_FILE to the metrics file"
        ]
    );
    let c = conf("[agent]\n  hostname = \"${WK_HOST?}\"\n[[inputs.cpu]]\n");
    assert_eq!(
        errors(c.load().test_mode().run()),
        ["2:14: [agent] hostname: environment variable WK_HOST is required but not set"]
    );
    // Set, even empty, satisfies `?` (not `:?`).
    let p = c.load().env("WK_HOST", "").test_mode().run().unwrap();
    assert!(
        !p.agent.hostname.is_empty(),
        "empty hostname means the OS host name"
    );
}

#[test]
fn strict_mode_unquoted_variable_is_a_toml_syntax_error() {
    let c = conf("[agent]\n  interval = \"10s\"\n  metric_batch_size = ${N}\n[[inputs.cpu]]\n");
    let e = errors(c.load().env("N", "500").test_mode().run());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("3:24: invalid TOML: "), "{e:?}");
    assert!(e[0].ends_with("quote the value, e.g. \"${N}\")"), "{e:?}");
}

#[test]
fn invalid_toml_names_the_line() {
    for (text, at) in [
        ("[[inputs.cpu]]\n  percpu = tru\n", "2:12: "),
        ("[[inputs.cpu]\n", "1:14: "),
        ("[agent]\ninterval = \"10s\"\ninterval = \"20s\"\n", "3:1: "),
        ("[[inputs.cpu]]\n  tags = { a = \"b\"\n", "2:"),
        ("\u{feff}[[inputs.cpu]]\n\n\n  x = \"unterminated\n", "4:"),
    ] {
        let e = load_errors(text);
        assert_eq!(e.len(), 1, "{text:?}: {e:?}");
        assert!(e[0].starts_with(at), "{text:?}: {e:?}");
        assert!(e[0].contains("invalid TOML"), "{text:?}: {e:?}");
    }
}

#[test]
fn config_directory_is_read_recursively_in_lexical_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let write = |rel: &str, text: &str| {
        let p = d.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    write("20-mem.conf", "[[inputs.mem]]\n");
    write("10-cpu.conf", "[[inputs.cpu]]\n");
    write("a/30-swap.conf", "[[inputs.swap]]\n");
    write("a.conf", "[[inputs.system]]\n");
    write("..2024_01_01/99-kernel.conf", "[[inputs.kernel]]\n");
    write("..data/99-kernel.conf", "[[inputs.kernel]]\n");
    write("notes.txt", "not a config");
    write("old.conf.bak", "[[inputs.nope]]\n");
    write("b/sub/deep/40-processes.conf", "[[inputs.processes]]\n");
    // Telegraf wants a name longer than ".conf" itself.
    write("c/.conf", "[[inputs.nope]]\n");
    let main = d.join("main.conf");
    fs::write(&main, "[[outputs.file]]\n").unwrap();
    let mut load = Load::files(std::slice::from_ref(&main));
    load.dirs = vec![d.to_path_buf()];
    let p = load.run().unwrap();
    let rel: Vec<String> = p
        .files
        .iter()
        .map(|f| f.strip_prefix(d).unwrap().display().to_string())
        .collect();
    // main.conf twice: once as --config, once found in the directory (Telegraf does the same).
    assert_eq!(
        rel,
        [
            "main.conf",
            "10-cpu.conf",
            "20-mem.conf",
            "a/30-swap.conf",
            "a.conf",
            "b/sub/deep/40-processes.conf",
            "main.conf",
        ]
    );
    let names: Vec<_> = p.inputs.iter().map(|i| i.spec.name).collect();
    assert_eq!(names, ["cpu", "mem", "swap", "system", "processes"]);
    assert_eq!(p.outputs.len(), 2);
}

#[test]
fn two_agent_tables_warn_and_the_later_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.conf");
    let b = tmp.path().join("b.conf");
    fs::write(
        &a,
        "[agent]\n  interval = \"10s\"\n  hostname = \"first\"\n[[inputs.cpu]]\n",
    )
    .unwrap();
    fs::write(&b, "# override\n[agent]\n  interval = \"30s\"\n").unwrap();
    let p = Load::files(&[a, b.clone()]).test_mode().run().unwrap();
    assert_eq!(p.agent.interval.as_secs(), 30);
    assert_eq!(
        p.agent.hostname, "first",
        "keys the later table leaves out stay"
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.warnings[0].file, b);
    assert_eq!(
        (p.warnings[0].line, p.warnings[0].column),
        (2, 2),
        "{}",
        p.warnings[0]
    );
    assert!(p.warnings[0].message.contains("multiple [agent] tables"));
}

const STAT: &str = "cpu  3768 0 1337 166014 147 0 44 5 0 0
cpu0 1900 0 700 83000 70 0 20 3 0 0
cpu1 1868 0 637 83014 77 0 24 2 0 0
intr 123456 0 9 0 0
ctxt 987654
btime 1763782980
processes 4321
procs_running 1
procs_blocked 0
";

/// Loads `text` with /proc under a fixture root and gathers every input once.
fn gather(text: &str) -> Vec<Metric> {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("proc")).unwrap();
    fs::write(root.path().join("proc/stat"), STAT).unwrap();
    let c = conf(text);
    let mut load = c.load().test_mode();
    load.paths = HostPaths::under(root.path());
    let mut plan = load.run().unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for ri in plan.inputs.iter_mut() {
        let o = ri.gather(1_700_000_000_000_000_000, &plan.global_tags);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        out.extend(o.metrics);
    }
    out
}

fn tags(m: &Metric) -> Vec<String> {
    m.tags().iter().map(|(k, v)| format!("{k}={v}")).collect()
}

const CPU: &str = "[[inputs.cpu]]\n  percpu = true\n  totalcpu = true\n  collect_cpu_time = true\n";

#[test]
fn tag_precedence_plugin_then_input_tags_then_global_tags() {
    let ms = gather(&format!(
        "[global_tags]\n  dc = \"global\"\n  team = \"global\"\n  cpu = \"global\"\n  host = \"from-global\"\n[agent]\n  hostname = \"testhost\"\n{CPU}  [inputs.cpu.tags]\n    team = \"input\"\n    cpu = \"input\"\n"
    ));
    assert_eq!(ms.len(), 3);
    let cpu0 = ms.iter().find(|m| m.tag("cpu") == Some("cpu0")).unwrap();
    // The plugin's cpu tag beats both; [inputs.cpu.tags] beats [global_tags]; the hostname
    // beats a host tag in [global_tags] (Telegraf sets it after reading them).
    assert_eq!(
        tags(cpu0),
        ["cpu=cpu0", "dc=global", "host=testhost", "team=input"]
    );
    // With omit_hostname the [global_tags] host stays.
    let ms = gather(&format!(
        "[global_tags]\n  host = \"from-global\"\n[agent]\n  omit_hostname = true\n{CPU}"
    ));
    assert_eq!(tags(&ms[0]), ["cpu=cpu0", "host=from-global"]);
    let ms = gather(&format!("[agent]\n  hostname = \"testhost\"\n{CPU}"));
    assert_eq!(tags(&ms[0]), ["cpu=cpu0", "host=testhost"]);
    let ms = gather(&format!("[agent]\n  omit_hostname = true\n{CPU}"));
    assert_eq!(tags(&ms[0]), ["cpu=cpu0"]);
}

#[test]
fn filters_select_and_modify() {
    let names = |ms: &[Metric]| -> Vec<String> {
        ms.iter()
            .map(|m| format!("{}:{}", m.name, m.tag("cpu").unwrap_or("")))
            .collect()
    };
    let base = "[agent]\n  hostname = \"h\"\n[global_tags]\n  dc = \"x\"\n";
    // namepass on the plugin's name, before name_override.
    let ms = gather(&format!(
        "{base}{CPU}  namepass = [\"cp?\"]\n  name_override = \"proc\"\n"
    ));
    assert_eq!(names(&ms), ["proc:cpu0", "proc:cpu1", "proc:cpu-total"]);
    let ms = gather(&format!("{base}{CPU}  namedrop = [\"c*\"]\n"));
    assert!(ms.is_empty());
    // tagpass sees only the plugin's own tags: a global tag never matches.
    let ms = gather(&format!(
        "{base}{CPU}  [inputs.cpu.tagpass]\n    cpu = [\"cpu[01]\"]\n"
    ));
    assert_eq!(names(&ms), ["cpu:cpu0", "cpu:cpu1"]);
    let ms = gather(&format!(
        "{base}{CPU}  [inputs.cpu.tagpass]\n    dc = [\"x\"]\n"
    ));
    assert!(ms.is_empty(), "{:?}", names(&ms));
    let ms = gather(&format!(
        "{base}{CPU}  [inputs.cpu.tagdrop]\n    cpu = [\"cpu-total\"]\n"
    ));
    assert_eq!(names(&ms), ["cpu:cpu0", "cpu:cpu1"]);
    // fieldinclude / fieldexclude.
    let ms = gather(&format!(
        "{base}{CPU}  fieldinclude = [\"time_user\", \"time_sys*\"]\n"
    ));
    let keys: Vec<_> = ms[0].fields.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, ["time_user", "time_system"]);
    let ms = gather(&format!("{base}{CPU}  fieldexclude = [\"time_*\"]\n"));
    assert!(ms.is_empty(), "no field left: the metric is discarded");
    // taginclude / tagexclude apply after global tags, so they can remove host.
    let ms = gather(&format!("{base}{CPU}  taginclude = [\"cpu\"]\n"));
    assert_eq!(tags(&ms[0]), ["cpu=cpu0"]);
    let ms = gather(&format!("{base}{CPU}  tagexclude = [\"host\"]\n"));
    assert_eq!(tags(&ms[0]), ["cpu=cpu0", "dc=x"]);
    // A bad glob is a config error at its line.
    let e = load_errors(&format!("{CPU}  namepass = [\"cpu[\"]\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("5:14: [inputs.cpu] namepass: "), "{e:?}");
}

#[test]
fn no_inputs_or_no_outputs() {
    let c = conf("[agent]\n  interval = \"10s\"\n[[outputs.file]]\n");
    let e = errors(c.load().run());
    assert_eq!(
        e,
        ["0:0: no inputs found: add at least one [[inputs.*]] plugin"]
    );
    let c = conf("[[inputs.cpu]]\n");
    assert_eq!(
        errors(c.load().run()),
        ["0:0: no outputs found: add at least one [[outputs.*]] plugin (or run with --test)"]
    );
    assert!(c.load().test_mode().run().is_ok());
    // An empty file, and a file of comments only.
    for text in ["", "# nothing here\n\n"] {
        let c = conf(text);
        assert!(c.load().test_mode().run().is_err());
    }
}

#[test]
fn single_table_legacy_form_is_accepted() {
    let c = conf("[inputs.cpu]\n  percpu = false\n\n[outputs.file]\n  files = [\"stdout\"]\n");
    let p = c.load().run().unwrap();
    assert_eq!(p.inputs.len(), 1);
    assert_eq!(p.outputs.len(), 1);
    // Telegraf's pre-1.0 [plugins] name for inputs.
    let c = conf("[plugins.cpu]\n  percpu = false\n");
    let p = c.load().test_mode().run().unwrap();
    assert_eq!(p.inputs.len(), 1);
    assert_eq!(warnings(&p).len(), 1);
}

#[test]
fn unknown_sections_and_plugins() {
    assert_eq!(
        load_errors("[agnet]\n  interval = \"10s\"\n[[inputs.cpu]]\n"),
        [
            "1:2: unsupported config section [agnet]: expected agent, global_tags, inputs, outputs, processors or aggregators"
        ]
    );
    assert_eq!(
        load_errors("interval = \"10s\"\n[[inputs.cpu]]\n"),
        [
            "1:1: top-level key \"interval\" is not allowed: settings belong in a table such as [agent]"
        ]
    );
    assert_eq!(
        load_errors("[[inputs.cpu]]\n[[inputs.dokcer]]\n[[outputs.influx]]\n[[inputs.io]]\n"),
        [
            "2:10: [inputs.dokcer]: no such plugin (undefined but requested input); did you mean \"docker\"?",
            "3:11: [outputs.influx]: no such plugin (undefined but requested output); did you mean \"influxdb\"?",
            "4:10: [inputs.io] was removed from Telegraf in 1.30.0: use inputs.diskio",
        ]
    );
    // Telegraf plugins we do not implement, of every kind, only warn.
    let c = conf(
        "[[inputs.cpu]]\n[[processors.rename]]\n[[aggregators.basicstats]]\n[[secretstores.os]]\n  id = \"s\"\n[[outputs.influxdb_v2]]\n",
    );
    let p = c.load().test_mode().run().unwrap();
    assert_eq!(p.warnings.len(), 4, "{:?}", warnings(&p));
}

#[test]
fn garbage_never_panics() {
    let text = fs::read_to_string(data("telegraf-default.conf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.conf");
    let load = Load::files(std::slice::from_ref(&path)).test_mode();
    let mut cuts: Vec<usize> = (0..text.len()).step_by(7).collect();
    // Every line end and the byte before it as well.
    cuts.extend(text.match_indices('\n').flat_map(|(i, _)| [i, i + 1]));
    let mut loaded = 0;
    for cut in cuts {
        if !text.is_char_boundary(cut) {
            continue;
        }
        fs::write(&path, &text[..cut]).unwrap();
        if load.run().is_ok() {
            loaded += 1;
        }
    }
    assert!(loaded > 0);
    // Bytes that are no UTF-8, and NULs.
    for bytes in [
        &b"\xff\xfe[[inputs.cpu]]\n"[..],
        b"[[inputs.cpu]]\n\0",
        b"[[inputs.cpu\xc3]]\n",
    ] {
        fs::write(&path, bytes).unwrap();
        assert!(load.run().is_err());
    }
}

#[test]
fn global_tags_of_later_files_override_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.conf");
    let b = tmp.path().join("b.conf");
    fs::write(&a, "[global_tags]\n  dc = \"a\"\n  rack = \"1\"\n[agent]\n  hostname = \"h\"\n[[inputs.cpu]]\n").unwrap();
    fs::write(&b, "[global_tags]\n  dc = \"b\"\n").unwrap();
    let p = Load::files(&[a, b]).test_mode().run().unwrap();
    assert_eq!(
        p.global_tags.tags,
        [
            ("dc".to_string(), "b".to_string()),
            ("rack".to_string(), "1".to_string()),
            ("host".to_string(), "h".to_string()),
        ]
    );
}

#[test]
fn bad_values_inside_tables_are_errors_at_the_value() {
    assert_eq!(
        load_errors(
            "[global_tags]\n  dc = 5\n[[inputs.cpu]]\n  [inputs.cpu.tags]\n    team = true\n  [inputs.cpu.tagpass]\n    cpu = [\"cpu0\", 1]\n    core = 7\n"
        ),
        [
            "2:8: [global_tags] dc: expected a string, found an integer",
            "5:12: [inputs.cpu.tags] team: expected a string, found a boolean",
            "7:20: [inputs.cpu.tagpass] cpu: expected a list of strings, found an integer in the list",
            "8:12: [inputs.cpu.tagpass] core: expected a list of strings, found an integer",
        ]
    );
}

#[test]
fn byte_order_mark_and_crlf_line_ends_are_accepted() {
    let c =
        conf("\u{feff}[agent]\r\n  interval = \"20s\"\r\n[[inputs.cpu]]\r\n  percpu = false\r\n");
    let p = c.load().test_mode().run().unwrap();
    assert_eq!(p.agent.interval.as_secs(), 20);
    // Positions still count from the first visible character.
    assert_eq!(
        load_errors("\u{feff}[[inputs.cpu]]\r\n  percpu = \"no\"\r\n"),
        ["2:12: [inputs.cpu] percpu: expected true or false, found \"no\""]
    );
}

#[test]
fn sections_in_the_wrong_shape() {
    for (text, want) in [
        (
            "[[agent]]\n  interval = \"10s\"\n[[inputs.cpu]]\n",
            "1:3: [[agent]] is not allowed: write [agent]",
        ),
        (
            "agent = 5\n[[inputs.cpu]]\n",
            "1:1: agent must be a table: write [agent]",
        ),
        (
            "[[inputs]]\n  cpu = 1\n[[outputs.file]]\n",
            "1:3: [[inputs]] is not allowed: write [[inputs.NAME]]",
        ),
    ] {
        assert_eq!(load_errors(text), [want], "{text:?}");
    }
}

#[test]
fn zero_batch_size_and_buffer_limit_mean_the_defaults() {
    let c = conf(
        "[agent]\n  metric_batch_size = 0\n  metric_buffer_limit = 0\n  interval = 0x1e\n[[inputs.cpu]]\n",
    );
    let p = c.load().test_mode().run().unwrap();
    assert_eq!(p.agent.metric_batch_size, 1000);
    assert_eq!(p.agent.metric_buffer_limit, 10000);
    // A TOML hex integer is still seconds.
    assert_eq!(p.agent.interval.as_secs(), 30);
}

#[test]
fn deeply_nested_values_do_not_overflow_the_stack() {
    for depth in [100, 10_000, 200_000] {
        let text = format!(
            "[[inputs.cpu]]\n  x = {}{}\n  y = {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth),
            "{a=".repeat(depth),
            "}".repeat(depth)
        );
        let c = conf(&text);
        assert!(c.load().test_mode().run().is_err(), "depth {depth}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Random text in TOML's alphabet, plus lines of a real config spliced in: the loader
    /// returns, with an error or a plan, and never panics.
    #[test]
    fn random_configs_never_panic(
        noise in "[\\[\\]a-z_.= \"'{},#$\n0-9\\\\-]{0,200}",
        keep in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..120),
    ) {
        let real = fs::read_to_string(data("telegraf-default.conf")).unwrap();
        let mut text: String = real
            .lines()
            .zip(keep.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, k)| **k)
            .map(|(l, _)| format!("{l}\n"))
            .collect();
        text.push_str(&noise);
        let c = conf(&text);
        let r = c.load().env("USER", "u").run();
        if let Err(e) = r {
            proptest::prop_assert!(!e.errors.is_empty());
        }
    }
}

#[test]
fn filters_that_match_nothing_leave_no_inputs_or_outputs() {
    let c = conf("[[inputs.cpu]]\n[[inputs.mem]]\n[[outputs.file]]\n");
    let run = |inputs: Option<&str>, outputs: Option<&str>| {
        let split = |s: Option<&str>| s.map(|s| s.split(':').map(String::from).collect());
        config::load(&LoadRequest {
            input_filter: split(inputs),
            output_filter: split(outputs),
            ..LoadRequest::new(vec![c.path.clone()])
        })
    };
    let p = run(Some("mem:swap"), None).unwrap();
    assert_eq!(p.inputs.len(), 1);
    assert_eq!(
        errors(run(Some("swap:disk"), None)),
        ["0:0: no inputs found: --input-filter swap:disk matches none of the [[inputs.*]] plugins"]
    );
    assert_eq!(
        errors(run(None, Some("influxdb"))),
        [
            "0:0: no outputs found: --output-filter influxdb matches none of the [[outputs.*]] plugins"
        ]
    );
}

#[test]
fn a_misspelled_sub_table_is_an_unknown_option_and_missing_files_are_errors() {
    let c = conf("[[inputs.cpu]]\n  [inputs.cpu.tagpas]\n    cpu = [\"cpu0\"]\n");
    assert_eq!(
        errors(c.load().test_mode().run()),
        [
            "2:15: [inputs.cpu] unknown option \"tagpas\": Telegraf has no such option here; did you mean \"tagpass\"?"
        ]
    );
    let missing = c.path.with_file_name("nope.conf");
    let e = Load::files(std::slice::from_ref(&missing))
        .test_mode()
        .run()
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: error: cannot read: ", missing.display())),
        "{e}"
    );
}

/// As Telegraf's `getPrecision`: an input with its own `interval` and no `precision` gets
/// the precision of its interval (a 500 ms input had the agent's 1 s, and its points
/// overwrote each other), unless the agent's `precision` is set explicitly.
#[test]
fn an_input_interval_sets_its_default_precision() {
    use std::time::Duration;
    let ms = Duration::from_millis;
    let p = conf("[agent]\n  interval = \"10s\"\n[[inputs.cpu]]\n  interval = \"500ms\"\n")
        .load()
        .test_mode()
        .run()
        .unwrap();
    let ri = &p.inputs[0];
    assert_eq!(p.agent.precision_for(ri.interval, ri.precision), ms(1));
    assert_eq!(p.agent.precision_for(None, None), Duration::from_secs(1));
    let p = conf(
        "[agent]\n  precision = \"1s\"\n[[inputs.cpu]]\n  interval = \"500ms\"\n[[inputs.mem]]\n  interval = \"500ms\"\n  precision = \"1us\"\n",
    )
    .load()
    .test_mode()
    .run()
    .unwrap();
    let (a, b) = (&p.inputs[0], &p.inputs[1]);
    assert_eq!(
        p.agent.precision_for(a.interval, a.precision),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.agent.precision_for(b.interval, b.precision),
        Duration::from_micros(1)
    );
}
