//! The outbox across restarts of the real `wk-alerter`: an alert whose webhook is down is
//! neither lost to a crash (SIGKILL) nor to a stop (SIGTERM), and reaches the receiver once
//! the webhook is fixed and the alerter started again, although the alert state, restored
//! as firing, sends nothing new.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use wk_core::testing::{free_port, wait_for};

use super::support::HttpSink;
use crate::common::alerter::{Logged, alerter_section, crit_rule};

const TOKEN: &str = "outbox-token-0123456789";

/// The config: stream mode on `port`, one webhook `hook` to `url` that retries for ~20 s.
fn write_conf(dir: &Path, port: u16, url: &str) -> std::path::PathBuf {
    let conf = dir.join("alerter.conf");
    let text = format!(
        "{}[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{TOKEN}\"\n  window = \"10m\"\n\
         [[notifiers.webhook]]\n  name = \"hook\"\n  url = \"{url}\"\n  timeout = \"2s\"\n  \
         retries = 100\n  backoff = \"200ms\"\n  backoff_max = \"200ms\"\n",
        alerter_section(dir, "  reload_interval = \"200ms\"\n"),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// Writes one point of `m,host=a` now; true once the stream endpoint took it.
fn post_point(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let body = format!("m,host=a v=1 {}\n", wk_alerter::clock::now_ns());
    let req = format!(
        "POST /api/v2/write?org=wk&bucket=b HTTP/1.1\r\nHost: x\r\nAuthorization: Token {TOKEN}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 204")
}

fn start(dir: &Path, port: u16, run: &str) -> Logged {
    let conf = dir.join("alerter.conf");
    let alerter = Logged::alerter(&conf, &[], dir.join(format!("alerter-{run}.log")));
    wait_for(
        "the stream endpoint to take a point",
        Duration::from_secs(20),
        || post_point(port),
    );
    alerter
}

#[test]
fn an_undelivered_alert_survives_a_crash_and_a_stop_and_is_sent_once_after() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, dead) = (free_port(), free_port());
    write_conf(d, port, &format!("http://127.0.0.1:{dead}/hook"));
    std::fs::write(
        d.join("rules").join("m_any.rhai"),
        crit_rule(
            r#"every: "1s", notify: ["hook"]"#,
            r#"query("m").field("v").range("10m").last().group_by("host")"#,
            "s.value >= 0.0",
        ),
    )
    .unwrap();
    let outbox = d.join("state").join("notify-outbox.json");
    let in_outbox = || {
        std::fs::read_to_string(&outbox).is_ok_and(|t| t.contains("m_any") && t.contains("hook"))
    };

    // 1. The alert fires; its webhook is down (connection refused, retried): a crash.
    let mut first = start(d, port, "1");
    first.wait_ready(Duration::from_secs(30), in_outbox);
    first.child.0.kill().unwrap();
    first.child.0.wait().unwrap();

    // 2. Started again: the alert is handed to the webhook again (the state, restored as
    // firing, does not repeat it); still down, then a stop: the outbox keeps it.
    let mut second = start(d, port, "2");
    second.wait_ready(Duration::from_secs(20), || {
        second_log_has(d, "did not deliver are sent again")
    });
    let pid = rustix::process::Pid::from_child(&second.child.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopped = wk_core::testing::poll_until(Duration::from_secs(20), || {
        second.child.0.try_wait().unwrap().is_some()
    });
    assert!(stopped, "a stop within 20 s:\n{}", second.log());
    assert!(
        second.log().contains("kept in the outbox"),
        "{}",
        second.log()
    );
    assert!(in_outbox(), "the stop kept the undelivered alert");

    // 3. The webhook fixed (another URL) and a start: delivered once, the outbox emptied.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sink = rt.block_on(HttpSink::start(vec![200]));
    write_conf(d, port, &sink.url("/hook"));
    let third = start(d, port, "3");
    let req = rt.block_on(sink.next());
    let body = req.json();
    assert_eq!(body["rule"], "m_any", "{body}");
    assert_eq!(body["level"], "CRITICAL", "{body}");
    wait_for("the outbox to be emptied", Duration::from_secs(10), || {
        !outbox.exists()
    });
    // Nothing more: no repeat from the restored state, no second copy from the outbox.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sink.requests.try_recv().is_err(),
        "one delivery:\n{}",
        third.log()
    );
}

fn second_log_has(dir: &Path, text: &str) -> bool {
    std::fs::read_to_string(dir.join("alerter-2.log")).is_ok_and(|l| l.contains(text))
}
