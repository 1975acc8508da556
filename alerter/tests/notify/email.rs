//! The email notifier against a real SMTP server (aiosmtpd from Debian's python3-aiosmtpd),
//! the received message parsed by Python's `email` package.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use wk_alerter::model::{AlertEvent, EventKind, Level};
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

/// A temp dir with an SMTP server storing mail in its `mail` folder.
struct Mailbox {
    _server: tokio::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Mailbox {
    /// None (the test returns) when aiosmtpd is missing and may be skipped.
    async fn start() -> Option<Mailbox> {
        if !aiosmtpd_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let (server, port) = smtp_server(&maildir, &[]).await;
        Some(Mailbox {
            _server: server,
            port,
            maildir,
            _dir: dir,
        })
    }

    /// A `[[notifiers.email]]` named `name` sending here without TLS, from Watchkeeper, plus
    /// the TOML lines `more`.
    fn notifier(&self, name: &str, more: &str) -> String {
        format!(
            "[[notifiers.email]]\n  name = \"{name}\"\n  host = \"127.0.0.1\"\n  port = {}\n  \
             tls = \"none\"\n  from = \"Watchkeeper <alerts@example.com>\"\n{more}\n",
            self.port
        )
    }
}

/// The message in file `path` parsed with PARSE.
fn parse_mail(path: &Path) -> serde_json::Value {
    let out = wk_core::testing::run_ok(
        std::process::Command::new(PYTHON)
            .args(["-c", PARSE])
            .arg(path),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn mail_reaches_a_real_smtp_server_with_subject_and_both_bodies() {
    let Some(mailbox) = Mailbox::start().await else {
        return;
    };
    let router = Router::start(plan(&mailbox.notifier(
        "ops-email",
        r#"  to = ["ops@example.com", "oncall@example.com"]
  subject = "[{{level}}] {{message}}""#,
    )));
    let mut e = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["ops-email"],
    );
    e.tags
        .insert("owner".into(), "<script>alert(1)</script>".into());
    e.details = "CPU busy 93.2% > 90%\nsecond line <script>alert(1)</script>".into();
    let mails = delivered(&router, vec![e], &mailbox.maildir).await;
    let st = router.stats();
    assert_eq!(st.notifier("ops-email").unwrap().sent, 1, "{st:?}");
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
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

/// Regression: one recipient the server refuses (550 to its RCPT: an address that left)
/// failed the message for good for every recipient. The others now get it, one transaction
/// each.
#[tokio::test]
async fn a_refused_recipient_does_not_cost_the_others_their_mail() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("refusing.py"),
        "from aiosmtpd.handlers import Mailbox\n\
         class Refusing(Mailbox):\n    \
             async def handle_RCPT(self, server, session, envelope, address, options):\n        \
                 if address.startswith('gone@'):\n            \
                     return '550 5.1.1 no such user'\n        \
                 if address.startswith('later@'):\n            \
                     return '450 4.2.0 try again later'\n        \
                 envelope.rcpt_tos.append(address)\n        \
                 return '250 OK'\n",
    )
    .unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let _server = tokio::process::Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "refusing.Refusing"])
        .arg(&maildir)
        .env("PYTHONPATH", dir.path())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start aiosmtpd");
    wait_port(port, Duration::from_secs(20)).await;
    let p = plan(&format!(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"a@example.com\"\nto = [\"gone@example.com\", \"ops@example.com\"]\n"
    ));
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    let sent = p.notifiers[0].notifier.send(&e).await;
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(messages(&maildir), 1, "ops@ got it");
    // Every recipient refused: refused for good, as before.
    let p = plan(&format!(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"a@example.com\"\nto = [\"gone@example.com\", \"gone@example.org\"]\n"
    ));
    let sent = p.notifiers[0].notifier.send(&e).await;
    assert!(matches!(sent, Err(NotifyError::Permanent(_))), "{sent:?}");
    // One reachable only later: tried again whole (ops@ may get it twice), never dropped.
    let p = plan(&format!(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"a@example.com\"\nto = [\"gone@example.com\", \"later@example.com\", \"ops@example.com\"]\n"
    ));
    let sent = p.notifiers[0].notifier.send(&e).await;
    assert!(
        matches!(sent, Err(NotifyError::Retryable(ref m)) if m.contains("later@")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_failure() {
    let port = free_port();
    let p = plan(&format!(
        "[[notifiers.email]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\n"
    ));
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    retryable(p.notifiers[0].notifier.send(&e).await);
}

#[tokio::test]
async fn starttls_and_implicit_tls_are_used_and_certificates_checked() {
    if !aiosmtpd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = wk_core::testing::self_signed_cert(dir.path()) else {
        return;
    };
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
    let send =
        async |tls: &str, port: u16, insecure: bool| notifier(tls, port, insecure).send(&e).await;
    // A self-signed certificate is refused unless verification is switched off.
    retryable(send("starttls", starttls_port, false).await);
    assert_eq!(messages(&starttls_dir), 0);
    send("starttls", starttls_port, true).await.unwrap();
    assert_eq!(messages(&starttls_dir), 1);

    retryable(send("tls", smtps_port, false).await);
    send("tls", smtps_port, true).await.unwrap();
    assert_eq!(messages(&smtps_dir), 1);

    // A STARTTLS client never falls back to plain text against a server without STARTTLS.
    let plain_dir = dir.path().join("plain");
    let (_s3, plain_port) = smtp_server(&plain_dir, &[]).await;
    retryable(send("starttls", plain_port, true).await);
    assert_eq!(messages(&plain_dir), 0);
}

/// Fails the test unless `sent` is a retryable failure.
fn retryable(sent: Result<(), NotifyError>) {
    let err = sent.unwrap_err();
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
}

/// Every message in `maildir` (see [`parsed`]) once `router` has sent `events`.
async fn delivered(
    router: &Router,
    events: Vec<AlertEvent>,
    maildir: &Path,
) -> Vec<serde_json::Value> {
    router.dispatch(events);
    router.flush().await;
    parsed(maildir)
}

fn subjects(mails: &[serde_json::Value]) -> Vec<&str> {
    mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect()
}

/// Parses every message in `maildir/new` with PARSE, sorted by subject.
fn parsed(maildir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|f| parse_mail(&f.unwrap().path()))
        .collect();
    out.sort_by_key(|m| m["subject"].as_str().unwrap_or_default().to_owned());
    out
}

#[tokio::test]
async fn thirty_firing_instances_are_one_email_per_group() {
    let Some(mailbox) = Mailbox::start().await else {
        return;
    };
    let maildir = &mailbox.maildir;
    let ops = mailbox.notifier(
        "ops-email",
        r#"  to = ["ops@example.com"]
  group_by = ["rule"]
  group_wait = "300ms"
  group_interval = "1s""#,
    );
    let all = mailbox.notifier(
        "all-email",
        r#"  to = ["oncall@example.com"]
  group_by = []
  group_wait = "300ms"
  group_interval = "1s"
  group_subject = "{{firing}} firing, {{resolved}} resolved ({{group_key}})""#,
    );
    let router = Router::start(plan(&format!("{ops}\n{all}")));
    let hosts: Vec<String> = (1..=30).map(|i| format!("web{i:02}")).collect();
    let both = |e| to(e, &["ops-email", "all-email"]);
    let fire = |rule: &str, h: &str| both(event(rule, h, EventKind::Alert, Level::Critical));
    let mut events: Vec<_> = hosts.iter().map(|h| fire("cpu", h)).collect();
    events.extend(["db1", "db2"].map(|h| fire("disk", h)));
    let m = delivered(&router, events, maildir).await;
    let first = [
        "32 firing, 0 resolved (all)",
        "[FIRING:2] rule=disk",
        "[FIRING:30] rule=cpu",
    ];
    assert_eq!(
        subjects(&m),
        first,
        "one email per group and receiver, not 64"
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
    let resolve = |h: &String| both(event("cpu", h, EventKind::Recovery, Level::Ok));
    let m = delivered(&router, hosts[2..].iter().map(resolve).collect(), maildir).await;
    assert_eq!(
        subjects(&m),
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
