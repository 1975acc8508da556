//! `[[notifiers.*]]` and `[[silences]]`: what loads, and errors that name file:line:column.

use std::time::Duration;

use wk_alerter::model::Level;

use super::support::{config_errors, plan, plan_env};

const ALL_KINDS: &str = r#"
[[notifiers.log]]
  name = "audit"
  file = "/tmp/wk-alerts.log"

[[notifiers.email]]
  name = "ops-email"
  host = "smtp.example.com"
  username = "alerts"
  password = "${SMTP_PASSWORD}"
  from = "Watchkeeper <alerts@example.com>"
  to = ["ops@example.com", "oncall@example.com"]
  min_level = "warning"
  send_recoveries = false

[[notifiers.webhook]]
  name = "chat"
  url = "https://hooks.example.com/T000/B000"
  format = "slack"
  timeout = "3s"
  retries = 5
  backoff = "500ms"
  backoff_max = "30s"
  give_up_after = "2h"
  [notifiers.webhook.headers]
    X-Team = "ops"

[[notifiers.exec]]
  name = "pager"
  command = ["/usr/local/bin/page", "--team", "ops"]
  queue_size = 50

[[notifiers.influxdb]]
  name = "alerts-db"
  database = "telegraf"

[alerter]
  ignored_here = true
"#;

#[test]
fn every_kind_loads_with_shared_options() {
    let p = plan_env(ALL_KINDS, &[("SMTP_PASSWORD", "s3cret")]);
    assert_eq!(
        p.names(),
        ["audit", "ops-email", "chat", "pager", "alerts-db"]
    );
    let email = &p.notifiers[1].settings;
    assert_eq!(email.kind, "email");
    assert_eq!(email.min_level, Level::Warning);
    assert!(!email.send_recoveries);
    let chat = &p.notifiers[2].settings;
    assert_eq!(
        (chat.timeout, chat.retries, chat.backoff, chat.backoff_max),
        (
            Duration::from_secs(3),
            5,
            Duration::from_millis(500),
            Duration::from_secs(30)
        )
    );
    assert_eq!(chat.give_up_after, Duration::from_secs(7200));
    let pager = &p.notifiers[3].settings;
    assert_eq!((pager.queue_size, pager.retries), (50, 3));
    assert_eq!(pager.timeout, Duration::from_secs(10));
    assert_eq!(
        pager.give_up_after,
        Duration::from_secs(86_400),
        "the default"
    );
    assert!(p.validate_names(&["chat".into(), "pager".into()]).is_ok());
    let err = p
        .validate_names(&["chat".into(), "pagr".into()])
        .unwrap_err();
    assert_eq!(err.unknown, ["pagr"]);
    assert!(err.to_string().contains("\"pagr\""), "{err}");
}

#[test]
fn samples_of_every_kind_load() {
    for spec in wk_alerter::notify::REGISTRY {
        let env = [
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/X",
            ),
            ("SMTP_PASSWORD", "x"),
        ];
        let p = plan_env(spec.sample_config, &env);
        assert_eq!(p.notifiers.len(), 1, "{}", spec.name);
        assert_eq!(p.notifiers[0].settings.kind, spec.name);
    }
}

/// Fails the test unless `errs` are `expect`, in any order, each error starting with its
/// expected text.
#[track_caller]
fn assert_errors(errs: &[String], expect: &[&str]) {
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), expect.len(), "{}", errs.join("\n"));
}

#[test]
fn errors_name_the_file_line_and_column() {
    let errs = config_errors(
        r#"
[[notifiers.log]]
  file = "/tmp/x.log"

[[notifiers.log]]
  name = "a"
  min_level = "loud"
  retries = -1
  give_up_after = "soon"

[[notifiers.webhook]]
  name = "a"
  url = "ftp://example.com/"
  formatt = "slack"

[[notifiers.pagerduty]]
  name = "pd"

[[notifiers.email]]
  name = "mail"
  host = "smtp.example.com"
  password = "${NOT_SET}"
  from = "not an address"
  tls = "ssl"

[[notifiers.exec]]
  name = "x"
  command = []
"#,
    );
    let expect = [
        "alerter.toml:2:1: error: [notifiers.log] name: is required",
        "alerter.toml:7:15: error: [notifiers.log] min_level: invalid level \"loud\"",
        "alerter.toml:8:13: error: [notifiers.log] retries: -1 is out of range 0..=100",
        "alerter.toml:9:19: error: [notifiers.log] give_up_after:",
        "alerter.toml:13:9: error: [notifiers.webhook] url: scheme \"ftp\" is not supported",
        "alerter.toml:12:10: error: [notifiers.webhook] name: \"a\" is already the name of another notifier",
        "alerter.toml:14:3: error: [notifiers.webhook] unknown option \"formatt\": no such option",
        "alerter.toml:16:13: error: [notifiers.pagerduty]: no such notifier kind; known kinds are email, exec, influxdb, log, webhook",
        "alerter.toml:24:9: error: [notifiers.email] tls: invalid value \"ssl\"",
        "alerter.toml:22:14: error: [notifiers.email] password: environment variable \"NOT_SET\" is not set",
        "alerter.toml:23:10: error: [notifiers.email] from: invalid address \"not an address\"",
        "alerter.toml:19:1: error: [notifiers.email] to: is required",
        "alerter.toml:28:13: error: [notifiers.exec] command: is required",
    ];
    assert_errors(&errs, &expect);
}

#[test]
fn a_broken_subject_template_is_a_config_error() {
    let errs = config_errors(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"h\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\nsubject = \"[{{level] {{message}}\"\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .starts_with("alerter.toml:6:11: error: [notifiers.email] subject: invalid template"),
        "{errs:?}"
    );
}

#[test]
fn secrets_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "hunter2\n").unwrap();
    let toml = format!(
        "[[notifiers.webhook]]\nname = \"w\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = {:?}\n",
        f.to_str().unwrap()
    );
    assert_eq!(plan(&toml).notifiers.len(), 1);
    let errs = config_errors(
        "[[notifiers.webhook]]\nname = \"w\"\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"/nonexistent/s\"\n",
    );
    assert!(
        errs[0].starts_with("alerter.toml:4:15: error: [notifiers.webhook] secret_file: cannot read \"/nonexistent/s\""),
        "{errs:?}"
    );
}

#[test]
fn silences_load_and_reject_unbounded_or_broken_ones() {
    let p = plan(
        r#"
[[silences]]
  matchers = { host = "web[12]", rule = "cpu_*" }
  starts = 2030-01-01T00:00:00Z
  ends = "2030-01-01T02:00:00+01:00"
  comment = "upgrade"

[[silences]]
  matchers = { host = "db1" }
  expires = "2030-06-01T00:00:00Z"
"#,
    );
    assert_eq!(p.silences.len(), 2);
    assert_eq!(
        p.silences[0].ends - p.silences[0].starts.unwrap(),
        3_600_000_000_000
    );
    assert_eq!(p.silences[1].starts, None);

    let errs = config_errors(
        r#"
[[silences]]
  comment = "no matchers, no end"

[[silences]]
  matchers = { host = "web1" }
  starts = "2030-01-01T00:00:00Z"
  ends = "2029-01-01T00:00:00Z"

[[silences]]
  matchers = { host = "web[1" }
  ends = "tomorrow"
  reason = "typo"
"#,
    );
    let expect = [
        "alerter.toml:2:1: error: [silences.0] matchers: is required",
        "alerter.toml:8:10: error: [silences.1] ends: must be later than `starts`",
        "alerter.toml:11:14: error: [silences.2] matchers: invalid glob pattern \"web[1\"",
        "alerter.toml:12:10: error: [silences.2] ends: invalid time \"tomorrow\"",
        "alerter.toml:13:3: error: [silences.2] unknown option \"reason\": no such option",
    ];
    assert_errors(&errs, &expect);
}
