//! The email notifier against a real SMTP server (aiosmtpd from Debian's python3-aiosmtpd),
//! the received message parsed by Python's `email` package.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use wk_alerter::model::{EventKind, Level};
use wk_alerter::notify::{NotifyError, Router};

use super::support::{event, free_port, plan, require, to, wait_port};

const PYTHON: &str = "/usr/bin/python3";

/// Prints subject, from, to, the text/plain and the text/html parts as JSON.
const PARSE: &str = r#"
import email, email.policy, json, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
print(json.dumps({
  'subject': m['subject'], 'from': m['from'], 'to': m['to'],
  'content_type': m.get_content_type(),
  'plain': m.get_body(('plain',)).get_content(),
  'html': m.get_body(('html',)).get_content(),
}))
"#;

fn aiosmtpd_available() -> bool {
    if !require(PYTHON, "Debian's python3") {
        return false;
    }
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    wk_core::testing::missing_server("python3 -m aiosmtpd", "python3-aiosmtpd").is_some()
}

/// Starts aiosmtpd on a free port, storing messages in `maildir`; `extra` are TLS options.
async fn smtp_server(maildir: &Path, extra: &[&str]) -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    wait_port(port, Duration::from_secs(20)).await;
    (child, port)
}

fn messages(maildir: &Path) -> usize {
    std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn mail_reaches_a_real_smtp_server_with_subject_and_both_bodies() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let (_server, port) = smtp_server(&maildir, &[]).await;

    let router = Router::start(plan(&format!(
        r#"
[[notifiers.email]]
  name = "ops-email"
  host = "127.0.0.1"
  port = {port}
  tls = "none"
  from = "Watchkeeper <alerts@example.com>"
  to = ["ops@example.com", "oncall@example.com"]
  subject = "[{{{{level}}}}] {{{{message}}}}"
"#
    )));
    let mut e = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["ops-email"],
    );
    e.tags
        .insert("owner".into(), "<script>alert(1)</script>".into());
    e.details = "CPU busy 93.2% > 90%\nsecond line <script>alert(1)</script>".into();
    router.dispatch(vec![e]);
    router.flush().await;
    let st = router.stats();
    assert_eq!(st.notifier("ops-email").unwrap().sent, 1, "{st:?}");

    let new = maildir.join("new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let path = files[0].as_ref().unwrap().path();
    let out = std::process::Command::new(PYTHON)
        .args(["-c", PARSE])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["subject"], "[CRITICAL] web1: cpu is CRITICAL");
    assert_eq!(m["from"], "Watchkeeper <alerts@example.com>");
    assert_eq!(m["to"], "ops@example.com, oncall@example.com");
    assert_eq!(m["content_type"], "multipart/alternative");
    assert_eq!(
        m["plain"],
        "CPU busy 93.2% > 90%\nsecond line <script>alert(1)</script>\n"
    );
    let html = m["html"].as_str().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("CPU busy 93.2% &gt; 90%"), "{html}");
    assert!(html.contains(">web1: cpu is CRITICAL</h2>"), "{html}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_failure() {
    let port = free_port();
    let p = plan(&format!(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\n"
    ));
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    let err = p.notifiers[0].notifier.send(&e).await.unwrap_err();
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
}

#[tokio::test]
async fn starttls_and_implicit_tls_are_used_and_certificates_checked() {
    if !aiosmtpd_available() || !require("/usr/bin/openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("/usr/bin/openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=localhost")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let starttls_dir = dir.path().join("starttls");
    let (_s1, starttls_port) =
        smtp_server(&starttls_dir, &["--tlscert", cert, "--tlskey", key]).await;
    let smtps_dir = dir.path().join("smtps");
    let (_s2, smtps_port) =
        smtp_server(&smtps_dir, &["--smtpscert", cert, "--smtpskey", key]).await;

    let notifier = |tls: &str, port: u16, insecure: bool| {
        plan(&format!(
            "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n\
             insecure_skip_verify = {insecure}\nfrom = \"a@example.com\"\nto = \"b@example.com\"\n"
        ))
        .notifiers
        .remove(0)
        .notifier
    };
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    // A self-signed certificate is refused unless verification is switched off.
    let err = notifier("starttls", starttls_port, false)
        .send(&e)
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    assert_eq!(messages(&starttls_dir), 0);
    notifier("starttls", starttls_port, true)
        .send(&e)
        .await
        .unwrap();
    assert_eq!(messages(&starttls_dir), 1);

    let err = notifier("tls", smtps_port, false)
        .send(&e)
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    notifier("tls", smtps_port, true).send(&e).await.unwrap();
    assert_eq!(messages(&smtps_dir), 1);

    // A STARTTLS client never falls back to plain text against a server without STARTTLS.
    let plain_dir = dir.path().join("plain");
    let (_s3, plain_port) = smtp_server(&plain_dir, &[]).await;
    let err = notifier("starttls", plain_port, true)
        .send(&e)
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    assert_eq!(messages(&plain_dir), 0);
}

/// Parses every message in `maildir/new` with PARSE, sorted by subject.
fn parsed(maildir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|f| {
            let o = std::process::Command::new(PYTHON)
                .args(["-c", PARSE])
                .arg(f.unwrap().path())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect();
    out.sort_by_key(|m| m["subject"].as_str().unwrap_or_default().to_owned());
    out
}

#[tokio::test]
async fn thirty_firing_instances_are_one_email_per_group() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let (_server, port) = smtp_server(&maildir, &[]).await;
    let router = Router::start(plan(&format!(
        r#"
[[notifiers.email]]
  name = "ops-email"
  host = "127.0.0.1"
  port = {port}
  tls = "none"
  from = "Watchkeeper <alerts@example.com>"
  to = ["ops@example.com"]
  group_by = ["rule"]
  group_wait = "300ms"
  group_interval = "1s"

[[notifiers.email]]
  name = "all-email"
  host = "127.0.0.1"
  port = {port}
  tls = "none"
  from = "Watchkeeper <alerts@example.com>"
  to = ["oncall@example.com"]
  group_by = []
  group_wait = "300ms"
  group_interval = "1s"
  group_subject = "{{{{firing}}}} firing, {{{{resolved}}}} resolved ({{{{group_key}}}})"
"#
    )));
    let hosts: Vec<String> = (1..=30).map(|i| format!("web{i:02}")).collect();
    let fire = |rule: &str, h: &str| {
        to(
            event(rule, h, EventKind::Alert, Level::Critical),
            &["ops-email", "all-email"],
        )
    };
    let mut events: Vec<_> = hosts.iter().map(|h| fire("cpu", h)).collect();
    events.extend(["db1", "db2"].map(|h| fire("disk", h)));
    router.dispatch(events);
    router.flush().await;
    assert_eq!(
        messages(&maildir),
        3,
        "one email per group and receiver, not 64"
    );
    let m = parsed(&maildir);
    let subjects: Vec<&str> = m.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subjects,
        [
            "32 firing, 0 resolved (all)",
            "[FIRING:2] rule=disk",
            "[FIRING:30] rule=cpu"
        ]
    );
    let plain = m[2]["plain"].as_str().unwrap();
    assert!(
        plain.starts_with("FIRING:30 rule=cpu\n\nFiring (30):\n"),
        "{plain}"
    );
    for h in &hosts {
        assert!(
            plain.contains(&format!("CRITICAL {h}: cpu is CRITICAL  [cpu:host={h}; ")),
            "{h} not listed:\n{plain}"
        );
    }
    let html = m[2]["html"].as_str().unwrap();
    assert_eq!(html.matches("<td>cpu:host=web").count(), 30, "{html}");

    // 28 recover: one more email with what still fires and what resolved.
    router.dispatch(
        hosts[2..]
            .iter()
            .map(|h| {
                to(
                    event("cpu", h, EventKind::Recovery, Level::Ok),
                    &["ops-email", "all-email"],
                )
            })
            .collect(),
    );
    router.flush().await;
    assert_eq!(messages(&maildir), 5);
    let m = parsed(&maildir);
    let subjects: Vec<&str> = m.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subjects,
        [
            "32 firing, 0 resolved (all)",
            "4 firing, 28 resolved (all)",
            "[FIRING:2 RESOLVED:28] rule=cpu",
            "[FIRING:2] rule=disk",
            "[FIRING:30] rule=cpu"
        ]
    );
    let plain = m[2]["plain"].as_str().unwrap();
    assert!(
        plain.contains("\nResolved (28):\n  OK       web03: cpu is OK  [cpu:host=web03; resolved "),
        "{plain}"
    );
    let st = router.stats();
    let n = st.notifier("ops-email").unwrap();
    assert_eq!((n.messages, n.sent, n.failed), (3, 62, 0), "{st:?}");
}
