//! The wk-alerter binary's command line: docs/cli.md's exit statuses, case by case, and
//! `--help`, man pages and completions for every command.

use std::path::Path;
use std::process::{Command, Output};

fn alerter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .args(args)
        .env_remove("WK_LOG")
        .output()
        .expect("run wk-alerter")
}

/// A stream-mode config listening on `listen`, with one good rule.
fn config(dir: &Path, listen: &str) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("cpu.rhai"),
        "rule(#{ every: \"10s\" });\nfn check() { query(\"cpu\").field(\"busy\").range(\"1h\").last().group_by(\"host\").run() }\n",
    )
    .unwrap();
    let conf = dir.join(format!("alerter-{}.conf", listen.replace([':', '.'], "_")));
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n[stream]\n  listen = \"{listen}\"\n  token = \"t0ken-for-the-test\"\n",
            rules.to_str().unwrap(),
            dir.join("state").to_str().unwrap()
        ),
    )
    .unwrap();
    conf.to_str().unwrap().to_owned()
}

#[test]
fn exit_statuses_are_the_documented_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = config(dir, "127.0.0.1:0");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = config(dir, &taken.local_addr().unwrap().to_string());
    let broken_rule = dir.join("broken.rhai");
    std::fs::write(&broken_rule, "fn check() { let x = ; }\n").unwrap();
    let bad_config = dir.join("bad.conf");
    std::fs::write(&bad_config, "[alerter]\n  rules_dir = 5\n").unwrap();
    let bad_data = dir.join("bad.lp");
    std::fs::write(&bad_data, "this is not line protocol\n").unwrap();
    let rule = dir.join("rules/cpu.rhai");
    // A webhook to a port nothing listens on.
    let refused = dir.join("refused.conf");
    let port = wk_core::testing::free_port();
    std::fs::write(
        &refused,
        format!(
            "{}[[notifiers.webhook]]\n  name = \"hook\"\n  url = \"http://127.0.0.1:{port}/\"\n",
            std::fs::read_to_string(&good).unwrap()
        ),
    )
    .unwrap();
    let refused = refused.to_str().unwrap().to_owned();
    let man = dir.join("man1");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: &[(&str, &dyn Fn() -> Output)] = &[
        ("`check --no-eval`, every rule loads", &|| {
            alerter(&["--config", &good, "check", "--no-eval"])
        }),
        ("`check --no-eval`, a rule does not load", &|| {
            alerter(&["--config", &good, "check", "--no-eval", &s(&broken_rule)])
        }),
        ("a config that does not load", &|| {
            alerter(&["--config", &s(&bad_config), "check", "--no-eval"])
        }),
        ("`test`, data that does not parse", &|| {
            alerter(&["test", &s(&rule), "--data", &s(&bad_data)])
        }),
        ("`silence add` with an invalid matcher", &|| {
            alerter(&[
                "--config",
                &good,
                "silence",
                "add",
                "--match",
                "host",
                "--for",
                "1h",
                "--comment",
                "test",
            ])
        }),
        ("`run`, the stream listener cannot bind", &|| {
            alerter(&["--config", &busy, "run"])
        }),
        ("`notifiers test`, a receiver refused", &|| {
            alerter(&["--config", &refused, "notifiers", "test"])
        }),
        ("`notifiers test`, an unknown notifier", &|| {
            alerter(&["--config", &refused, "notifiers", "test", "nope"])
        }),
        ("an unknown command", &|| alerter(&["frobnicate"])),
        ("`completions bash`", &|| alerter(&["completions", "bash"])),
        ("`man --dir DIR`", &|| alerter(&["man", "--dir", &s(&man)])),
    ];
    wk_core::testing::assert_documented_exit_statuses("wk-alerter", cases);
    drop(taken);
}

#[test]
fn help_man_pages_and_completions_cover_every_command() {
    let pages = wk_core::testing::assert_help_man_and_completions_agree(Path::new(env!(
        "CARGO_BIN_EXE_wk-alerter"
    )));
    for cmd in [
        "run",
        "check",
        "test",
        "silence-add",
        "silence-list",
        "silence-expire",
        "notifiers-test",
    ] {
        assert!(pages.contains(&format!("wk-alerter-{cmd}.1")), "{pages:?}");
    }
}
