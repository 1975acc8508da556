//! `wk-alerter notifiers test`: one test message through each notifier, as the running alerter
//! would send it, and an exit status that says whether every receiver took it.

use std::process::Output;

use super::support::{HttpSink, free_port};

/// Runs `wk-alerter --config <conf> notifiers test <names>` off the runtime (the sink answers
/// on it meanwhile).
async fn notify_test(conf: &std::path::Path, names: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wk-alerter"));
    cmd.arg("--config")
        .arg(conf)
        .args(["notifiers", "test"])
        .args(names);
    cmd.env_remove("WK_LOG");
    tokio::task::spawn_blocking(move || cmd.output().expect("run wk-alerter"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notifier_gets_one_test_message_and_a_refusal_is_named() {
    let mut sink = HttpSink::start(vec![200]).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let closed = free_port();
    let conf = dir.path().join("alerter.conf");
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
             [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"a-token-long-enough-for-tests\"\n\
             [[notifiers.log]]\n  name = \"ops-log\"\n  file = {events:?}\n  min_level = \"critical\"\n\
             [[notifiers.webhook]]\n  name = \"chat\"\n  url = \"{}\"\n  group_by = [\"host\"]\n\
             [[notifiers.webhook]]\n  name = \"down\"\n  url = \"http://127.0.0.1:{closed}/\"\n  retries = 5\n",
            dir.path().join("rules"),
            dir.path().join("state"),
            sink.url("/hook"),
        ),
    )
    .unwrap();

    let out = notify_test(&conf, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a receiver refused: {stdout}{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("ops-log (log): delivered in "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("chat (webhook): delivered in "),
        "{stdout}"
    );
    // Once, no retry, and the cause, not only reqwest's "error sending request".
    assert!(
        lines[2].starts_with("down (webhook): FAILED: POST failed: ")
            && lines[2].contains("Connection refused"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 3 notifiers failed"), "{stderr}");

    // Whatever min_level says: the operator asked for it.
    let logged = std::fs::read_to_string(&events).unwrap();
    let e: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
    assert_eq!(
        (e["rule"].as_str(), e["id"].as_str()),
        (Some("wk_test"), Some("wk_test:ops-log"))
    );
    // A grouped notifier gets a group of one, in its group format.
    let body = sink.next().await.json();
    assert_eq!(body["firing"][0]["id"], "wk_test:chat", "{body}");
    assert_eq!(
        body["group"]["host"], body["firing"][0]["tags"]["host"],
        "{body}"
    );

    // Only the one named; an unknown name is invalid input, naming what the config has.
    let out = notify_test(&conf, &["chat"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = notify_test(&conf, &["chta"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no notifier named chta; the config has: ops-log, chat, down"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With a `[heartbeat]`, `notifiers test` (or `notifiers test heartbeat`) also pings the dead
/// man's switch once — its `url`, never `fail_url`, which would page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_gets_one_test_ping() {
    let mut sink = HttpSink::start(vec![200]).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("alerter.conf");
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
             [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"a-token-long-enough-for-tests\"\n\
             [heartbeat]\n  url = \"{}\"\n  fail_url = \"{}\"\n",
            dir.path().join("rules"),
            dir.path().join("state"),
            sink.url("/ping"),
            sink.url("/fail"),
        ),
    )
    .unwrap();
    let out = notify_test(&conf, &["heartbeat"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("heartbeat (heartbeat): delivered in "),
        "{stdout}"
    );
    let ping = sink.next().await;
    assert_eq!((ping.method.as_str(), ping.path.as_str()), ("GET", "/ping"));
}
