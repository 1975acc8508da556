//! The whole alerter (`wk-alerter run`, the real binary) against a real influxd, observed
//! through its `log` notifier: rules fire and recover, a broken rule pushed while good ones
//! run is reported and its last good version keeps running, a restart neither repeats nor
//! loses notifications, and an influxd outage gives Error events but no false recoveries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::influxd::Influxd;

use wk_core::testing::wait_for;

fn cpu_rule() -> String {
    crate::common::alerter::crit_rule(
        r#"every: "1s", notify: ["log"], no_data: "keep", message: "{{host}}: busy {{value:.0}} is {{level}}""#,
        r#"query("cpu").field("busy").range("1h").last().group_by("host")"#,
        "s.value > 90.0",
    )
}

/// The same query as the cpu rule, with an Error policy that notifies.
const PROBE_RULE: &str = r#"
rule(#{ every: "1s", notify: ["log"], error: "warning", no_data: "keep" });

fn check() {
    query("cpu").field("busy").range("1h").last().group_by("host").run()
}
"#;

/// Which events [`Setup::count`] counts: rule, kind and (when given) host.
type Key<'a> = (&'a str, &'a str, Option<&'a str>);

/// The cpu rule's events of `kind` for `host`.
fn cpu<'a>(kind: &'a str, host: &'a str) -> Key<'a> {
    ("cpu", kind, Some(host))
}

struct Setup {
    dir: tempfile::TempDir,
    db: Influxd,
}

impl Setup {
    fn new() -> Option<Setup> {
        Setup::with("")
    }

    /// With `extra` lines in `[alerter]`.
    fn with(extra: &str) -> Option<Setup> {
        let db = Influxd::start()?;
        db.create_database("wk");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        let conf = format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n  reload_interval = \"200ms\"\n  rule_errors_notify = [\"log\"]\n{extra}\
             [[sources.influxdb]]\n  url = \"{}\"\n  database = \"wk\"\n  timeout = \"2s\"\n\
             [[notifiers.log]]\n  name = \"log\"\n  file = {:?}\n\
             [http]\n  listen = \"127.0.0.1:0\"\n",
            dir.path().join("rules"),
            dir.path().join("state"),
            db.url,
            dir.path().join("events.jsonl"),
        );
        std::fs::write(dir.path().join("alerter.conf"), conf).unwrap();
        Some(Setup { dir, db })
    }

    fn rule(&self, name: &str, text: &str) {
        // Write then rename, as wk-deploy-config installs files: the alerter never reads half
        // a file. (`git pull` itself unlinks and rewrites: see scheduler's missing-file test.)
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("rules").join(name)).unwrap();
    }

    fn busy(&self, host: &str, value: f64) {
        self.db
            .write("wk", &format!("cpu,host={host} busy={value}"));
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"))
            })
            .collect()
    }

    fn count(&self, rule: &str, kind: &str, host: Option<&str>) -> usize {
        self.events()
            .iter()
            .filter(|e| e["rule"] == rule && e["kind"] == kind)
            .filter(|e| host.is_none_or(|h| e["tags"]["host"] == h))
            .count()
    }

    /// Waits until `count(rule, kind, host)` is `n`; `what` names the wait.
    fn wait_count(&self, what: &str, (rule, kind, host): Key, n: usize) {
        wait_for(what, T, || self.count(rule, kind, host) == n);
    }

    /// Fails the test, saying `why`, unless `count(rule, kind, host)` is `n`.
    #[track_caller]
    fn assert_count(&self, (rule, kind, host): Key, n: usize, why: &str) {
        assert_eq!(self.count(rule, kind, host), n, "{why}");
    }

    /// The first event of `rule`.
    fn first(&self, rule: &str) -> Value {
        let events = self.events();
        let found = events.into_iter().find(|e| e["rule"] == rule);
        found.unwrap_or_else(|| panic!("no event of {rule}"))
    }

    /// Writes the `busy` value of each host, the cpu rule, and starts the alerter.
    fn start_cpu(&self, busy: &[(&str, f64)]) -> Alerter {
        for (host, value) in busy {
            self.busy(host, *value);
        }
        self.rule("cpu.rhai", &cpu_rule());
        self.start(0)
    }

    fn start(&self, run: usize) -> Alerter {
        let stderr = self.dir.path().join(format!("alerter-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
            .args([
                "--config",
                self.dir.path().join("alerter.conf").to_str().unwrap(),
                "run",
            ])
            .env("WK_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start wk-alerter");
        Alerter { child, stderr }
    }
}

struct Alerter {
    child: Child,
    stderr: PathBuf,
}

impl Alerter {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Evaluations of `rule` this process has finished (its debug log says so each time).
    fn evaluations(&self, rule: &str) -> usize {
        let needle = format!("rule={rule}");
        self.log()
            .lines()
            .filter(|l| l.contains("evaluated") && l.contains(&needle))
            .count()
    }

    /// Waits until `n` more evaluations of `rule` have finished.
    fn wait_evaluations(&self, rule: &str, n: usize) {
        let start = self.evaluations(rule);
        wait_for(
            &format!("{n} evaluations of {rule}"),
            Duration::from_secs(20),
            || self.evaluations(rule) >= start + n,
        );
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "wk-alerter exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const T: Duration = Duration::from_secs(20);

#[test]
fn rules_fire_recover_and_a_broken_push_keeps_the_last_good_version() {
    let Some(s) = Setup::new() else { return };
    let a = s.start_cpu(&[("web1", 95.0), ("web2", 10.0)]);
    s.wait_count("web1 CRITICAL", cpu("alert", "web1"), 1);
    a.wait_evaluations("cpu", 2);
    s.assert_count(cpu("alert", "web2"), 0, "web2 is fine");

    // A broken version is pushed: reported with file and line, the old one keeps running.
    s.rule("cpu.rhai", "rule(#{ every: \"1s\" });\nfn check( {\n");
    s.wait_count("the broken-rule alert", ("wk_rules", "alert", None), 1);
    let broken = s.first("wk_rules");
    let msg = broken["message"].as_str().unwrap();
    assert!(
        msg.contains("cpu.rhai") && msg.contains("cpu.rhai:2:"),
        "{msg}"
    );
    s.busy("web1", 5.0);
    s.wait_count(
        "web1 recovery from the last good version",
        cpu("recovery", "web1"),
        1,
    );

    // Fixed: the rule-file alert recovers.
    s.rule("cpu.rhai", &cpu_rule());
    s.wait_count(
        "the broken-rule recovery",
        ("wk_rules", "recovery", None),
        1,
    );
    a.stop();
}

#[test]
fn a_restart_neither_repeats_a_firing_alert_nor_loses_a_recovery() {
    let Some(s) = Setup::new() else { return };
    let a = s.start_cpu(&[("web1", 95.0)]);
    s.wait_count("web1 CRITICAL", cpu("alert", "web1"), 1);
    a.stop();

    // Still firing after the restart: no second notification.
    let a = s.start(1);
    a.wait_evaluations("cpu", 3);
    s.assert_count(cpu("alert", "web1"), 1, "re-notified after restart");
    a.stop();

    // Cleared while the alerter was down: exactly one recovery.
    s.busy("web1", 5.0);
    let a = s.start(2);
    s.wait_count("web1 recovery", cpu("recovery", "web1"), 1);
    a.wait_evaluations("cpu", 3);
    s.assert_count(cpu("recovery", "web1"), 1, "");
    s.assert_count(cpu("alert", "web1"), 1, "");
    a.stop();
}

#[test]
fn an_influxdb_outage_is_an_error_not_a_recovery_and_evaluation_resumes() {
    let Some(mut s) = Setup::new() else { return };
    s.rule("probe.rhai", PROBE_RULE);
    let a = s.start_cpu(&[("web1", 95.0)]);
    s.wait_count("web1 CRITICAL", cpu("alert", "web1"), 1);

    s.db.stop();
    s.wait_count("the probe's Error event", ("probe", "error", None), 1);
    a.wait_evaluations("cpu", 3);
    s.assert_count(
        cpu("recovery", "web1"),
        0,
        "false recovery during the outage",
    );
    s.assert_count(cpu("no_data", "web1"), 0, "NoData during the outage");
    s.assert_count(
        ("probe", "error", None),
        1,
        "the Error event is not repeated",
    );

    s.db.restart();
    s.wait_count("the probe's recovery", ("probe", "recovery", None), 1);
    a.wait_evaluations("cpu", 2);
    s.assert_count(cpu("alert", "web1"), 1, "re-notified after the outage");
    s.assert_count(cpu("recovery", "web1"), 0, "");
    a.stop();
}

/// Silences from the command line (`wk-alerter silence`), kept in the state dir: one made
/// before the alert fires mutes it, `list` shows it, `expire` ends it and the still-firing
/// alert it muted is sent once.
#[test]
fn command_line_silences_mute_and_an_expired_one_sends_the_alert_once() {
    let Some(s) = Setup::new() else { return };
    let conf = s.dir.path().join("alerter.conf");
    let cli = |args: &[&str]| crate::common::alerter::cli(&conf, args);
    let (code, id, err) = cli(&[
        "silence",
        "add",
        "--match",
        "host=web1",
        "--match",
        "rule=~cp.*",
        "--for",
        "1h",
        "--comment",
        "kernel upgrade",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(id.len(), 8, "{id:?}");
    let (code, _, err) = cli(&[
        "silence",
        "add",
        "--match",
        "host=~(",
        "--for",
        "1h",
        "--comment",
        "x",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a valid regular expression"), "{err}");

    let a = s.start_cpu(&[("web1", 95.0), ("web2", 95.0)]);
    s.wait_count("web2 CRITICAL", cpu("alert", "web2"), 1);
    a.wait_evaluations("cpu", 2);
    s.assert_count(cpu("alert", "web1"), 0, "silenced");
    let (_, list, _) = cli(&["silence", "list"]);
    assert!(
        list.contains(&id) && list.contains("active until") && list.contains("kernel upgrade"),
        "{list}"
    );

    let (code, _, err) = cli(&["silence", "expire", &id]);
    assert_eq!(code, Some(0), "{err}");
    s.wait_count("web1 sent once the silence ended", cpu("alert", "web1"), 1);
    a.wait_evaluations("cpu", 3);
    s.assert_count(cpu("alert", "web1"), 1, "sent once");
    s.assert_count(cpu("alert", "web2"), 1, "");
    let (_, list, _) = cli(&["silence", "list"]);
    assert!(!list.contains(&id), "{list}");
    let (_, all, _) = cli(&["silence", "list", "--all"]);
    assert!(all.contains(&id) && all.contains("ended"), "{all}");
    a.stop();
}

/// A fresh-data rule with the default policies (`error: "keep"`, NoData CRITICAL).
const FRESH_RULE: &str = r#"
rule(#{ every: "1s", notify: ["log"] });

fn check() {
    query("cpu").field("busy").range("2s").last().group_by("host").run()
}
"#;

/// With the default `error: "keep"` an outage used to be silent; and when the source came
/// back, every host whose agent had not yet re-sent its backlog went NoData at once.
#[test]
fn a_source_outage_is_one_health_alert_and_no_nodata_storm_when_it_returns() {
    let Some(mut s) =
        Setup::with("  source_outage_after = \"2s\"\n  source_recovery_grace = \"6s\"\n")
    else {
        return;
    };
    s.rule("fresh.rhai", FRESH_RULE);
    let a = s.start(0);
    s.busy("web1", 5.0);
    a.wait_evaluations("fresh", 1);
    s.busy("web1", 5.0);

    s.db.stop();
    s.wait_count("the wk_source alert", ("wk_source", "alert", None), 1);
    a.wait_evaluations("fresh", 2);
    s.assert_count(("wk_source", "alert", None), 1, "one alert per outage");
    s.assert_count(("fresh", "no_data", None), 0, "NoData during the outage");
    let alert = s.first("wk_source");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{alert}"
    );

    // Back, but web1's agent has not re-sent yet: within the grace, no NoData.
    s.db.restart();
    s.wait_count("the wk_source recovery", ("wk_source", "recovery", None), 1);
    a.wait_evaluations("fresh", 3);
    s.assert_count(
        ("fresh", "no_data", None),
        0,
        "NoData storm after the outage",
    );
    // The grace ends: a host that stays silent does go NoData.
    s.wait_count(
        "web1 NoData after the grace",
        ("fresh", "no_data", Some("web1")),
        1,
    );
    a.stop();
}

#[test]
fn check_reports_what_would_fire_and_broken_rules() {
    let Some(s) = Setup::new() else { return };
    s.busy("web1", 95.0);
    s.busy("web2", 10.0);
    s.rule("cpu.rhai", &cpu_rule());
    let conf = s.dir.path().join("alerter.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .args(["--config", conf.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cpu [host=web1] CRITICAL (would fire)"),
        "{stdout}"
    );
    assert!(stdout.contains("cpu [host=web2] OK (ok)"), "{stdout}");
    assert!(
        !Path::new(&s.dir.path().join("events.jsonl")).exists(),
        "check sent something"
    );

    s.rule("bad.rhai", "rule(#{ every: \"1x\" });\nfn check() { [] }\n");
    let out = Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .args(["--config", conf.to_str().unwrap(), "check", "--no-eval"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("bad.rhai:1:"), "{stdout}");
}

/// The real alerter with a grouped email notifier (`group_by = ["rule"]`) and a real
/// aiosmtpd: 30 hosts over the limit in one evaluation are one email, and their 30
/// recoveries one more — not 60.
#[test]
fn thirty_hosts_firing_are_one_grouped_email_from_the_running_alerter() {
    if !crate::heal::require(crate::heal::PYTHON, "python3-aiosmtpd") {
        return;
    }
    let Some(s) = Setup::new() else { return };
    let smtp_port = crate::common::influxd::free_port();
    let maildir = s.dir.path().join("mail");
    let mut smtp = Command::new(crate::heal::PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{smtp_port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd (apt-get install python3-aiosmtpd)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _smtp = Kill(&mut smtp);
    wait_for("aiosmtpd to listen", T, || {
        std::net::TcpStream::connect(("127.0.0.1", smtp_port)).is_ok()
    });
    let conf = s.dir.path().join("alerter.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "[[notifiers.email]]\n  name = \"mail\"\n  host = \"127.0.0.1\"\n  port = {smtp_port}\n  \
         tls = \"none\"\n  from = \"wk@example.com\"\n  to = [\"ops@example.com\"]\n  \
         group_by = [\"rule\"]\n  group_wait = \"2s\"\n  group_interval = \"1s\"\n"
    ));
    std::fs::write(&conf, text).unwrap();
    let hosts: Vec<String> = (1..=30).map(|i| format!("web{i:02}")).collect();
    let all = |busy: f64| {
        let lines: Vec<String> = hosts
            .iter()
            .map(|h| format!("cpu,host={h} busy={busy}"))
            .collect();
        s.db.write("wk", &lines.join("\n"));
    };
    all(95.0);
    s.rule(
        "cpu.rhai",
        &cpu_rule().replace("notify: [\"log\"]", "notify: [\"log\", \"mail\"]"),
    );
    let a = s.start(0);
    let mails = || -> Vec<String> {
        let mut subjects: Vec<String> = std::fs::read_dir(maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_else(|_| Vec::new())
            .iter()
            .map(|p| {
                let m = std::fs::read_to_string(p).unwrap_or_default();
                m.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        subjects.sort();
        subjects
    };
    s.wait_count("30 alerts", ("cpu", "alert", None), 30);
    wait_for("the grouped email", T, || !mails().is_empty());
    a.wait_evaluations("cpu", 3);
    assert_eq!(mails(), ["[FIRING:30] rule=cpu"]);

    all(10.0);
    s.wait_count("30 recoveries", ("cpu", "recovery", None), 30);
    wait_for("the resolved email", T, || mails().len() == 2);
    a.wait_evaluations("cpu", 3);
    assert_eq!(mails(), ["[FIRING:30] rule=cpu", "[RESOLVED:30] rule=cpu"]);
    a.stop();
}
