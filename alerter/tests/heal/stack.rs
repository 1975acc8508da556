//! The whole stack for the end-to-end healing tests (and `benches/heal.rs`): a real influxd
//! (query mode) or none (stream mode: the agent writes to the alerter), a real aiosmtpd, the
//! real wk-alerter binary (restartable, same state dir) and, where a scenario needs it, the
//! real wk-agent probing the service with `http_response` (every second in the tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::PYTHON;
use super::process::Spawned;
use crate::common::alerter::json_lines;
use crate::common::influxd::{Influxd, free_port};
use crate::common::wait::poll_until;

pub const DB: &str = "wk";

/// The stream receiver's token in stream mode.
pub const STREAM_TOKEN: &str = "heal-stream-token-0123456789abcdef";

/// Where the alerter's data comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// A real influxd the agent writes to and the rules query.
    Query,
    /// No database: `[stream]`, the agent writes to the alerter itself.
    Stream,
}

/// Prints subject and the text/plain body of one message as JSON.
const PARSE_MAIL: &str = r#"
import email, email.policy, json, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
b = m.get_body(('plain',))
print(json.dumps({'subject': m['subject'], 'plain': b.get_content() if b else ''}))
"#;

pub struct Stack {
    pub dir: tempfile::TempDir,
    /// The influxd (query mode only: see [`Stack::db`]).
    pub influxd: Option<Influxd>,
    /// The alerter's stream receiver port (stream mode only).
    pub stream_port: Option<u16>,
    smtp: Spawned,
    alerter: Option<Spawned>,
    agent: Option<Spawned>,
    runs: usize,
}

/// One email as received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

impl Stack {
    /// influxd + aiosmtpd + an alerter config: the `ops` email and `log` notifiers, and
    /// `actions` (TOML lines for `[actions]`, e.g. scripts_dir) plus `extra` tables.
    /// None when the servers are not installed and WK_SKIP_SERVERS=1.
    pub fn new(actions: &str, extra: &str) -> Option<Stack> {
        Stack::with_source(Source::Query, actions, extra)
    }

    /// [`Stack::new`] with the data source chosen: query mode starts an influxd, stream mode
    /// none (the alerter listens for the agent's writes on a free port).
    pub fn with_source(source: Source, actions: &str, extra: &str) -> Option<Stack> {
        if !super::require(PYTHON, "python3") {
            return None;
        }
        let (influxd, stream_port) = match source {
            Source::Query => {
                let db = Influxd::start()?;
                db.create_database(DB);
                (Some(db), None)
            }
            Source::Stream => (None, Some(free_port())),
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("rules")).unwrap();
        let smtp_port = free_port();
        let smtp = Spawned::spawn(
            Command::new(PYTHON)
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{smtp_port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(d.join("mail"))
                .stdin(Stdio::null())
                .stderr(std::fs::File::create(d.join("smtp.log")).unwrap()),
            false,
        )
        .expect("start aiosmtpd (apt-get install python3-aiosmtpd)");
        assert!(
            poll_until(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                smtp_port
            ))
            .is_ok()),
            "aiosmtpd did not listen: {}",
            std::fs::read_to_string(d.join("smtp.log")).unwrap_or_default()
        );
        let data = match (&influxd, stream_port) {
            (Some(db), _) => format!(
                "[[sources.influxdb]]\n  url = \"{}\"\n  database = \"{DB}\"\n  timeout = \"2s\"\n",
                db.url
            ),
            (None, Some(port)) => format!(
                "[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{STREAM_TOKEN}\"\n  window = \"10m\"\n"
            ),
            (None, None) => unreachable!(),
        };
        let conf = format!(
            "[alerter]\n  rules_dir = {rules:?}\n  state_dir = {state:?}\n  reload_interval = \"200ms\"\n\
             {data}\
             [[notifiers.email]]\n  name = \"ops\"\n  host = \"127.0.0.1\"\n  port = {smtp_port}\n  tls = \"none\"\n  \
             from = \"wk@example.com\"\n  to = [\"ops@example.com\"]\n  subject = \"{{{{message}}}}\"\n\
             [[notifiers.log]]\n  name = \"log\"\n  file = {events:?}\n\
             [actions]\n  grace = \"1s\"\n  local_hosts = [\"web1\"]\n{actions}\n{extra}\n",
            rules = d.join("rules"),
            state = d.join("state"),
            events = d.join("events.jsonl"),
        );
        std::fs::write(d.join("alerter.conf"), conf).unwrap();
        Some(Stack {
            dir,
            influxd,
            stream_port,
            smtp,
            alerter: None,
            agent: None,
            runs: 0,
        })
    }

    /// The influxd (query mode).
    pub fn db(&self) -> &Influxd {
        self.influxd
            .as_ref()
            .expect("a stream-mode stack has no influxd")
    }

    /// Writes a rule (write + rename: never half a file).
    pub fn rule(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("rules").join(name)).unwrap();
    }

    /// Starts (or restarts, keeping its state dir) the real wk-alerter.
    pub fn start_alerter(&mut self) {
        self.stop_alerter();
        self.runs += 1;
        let log = self.dir.path().join(format!("alerter-{}.log", self.runs));
        let p = Spawned::spawn(
            Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
                .arg("--config")
                .arg(self.dir.path().join("alerter.conf"))
                .arg("run")
                .env("WK_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap()),
            false,
        )
        .expect("start wk-alerter");
        self.alerter = Some(p);
    }

    /// SIGTERM to the alerter and wait for it (a clean stop, as systemd does).
    pub fn stop_alerter(&mut self) {
        if let Some(p) = self.alerter.take() {
            p.signal(libc::SIGTERM);
            assert!(
                p.wait_exit(Duration::from_secs(15)).is_some(),
                "wk-alerter did not stop on SIGTERM"
            );
        }
    }

    /// Starts the real wk-agent (hostname `host`, 1 s interval) with `inputs` (TOML),
    /// writing to the influxd.
    pub fn start_agent(&mut self, host: &str, inputs: &str) {
        self.start_agent_every(host, inputs, Some("1s"));
    }

    /// [`Stack::start_agent`] with `interval` as both the collection and the flush interval
    /// (`None`: the agent's defaults, 10 s and 10 s), writing to the influxd in query mode and
    /// to the alerter's stream receiver in stream mode.
    pub fn start_agent_every(&mut self, host: &str, inputs: &str, interval: Option<&str>) {
        let timing = interval
            .map(|i| format!("  interval = \"{i}\"\n  flush_interval = \"{i}\"\n"))
            .unwrap_or_default();
        let output = match (&self.influxd, self.stream_port) {
            (Some(db), _) => format!("  urls = [\"{}\"]\n  database = \"{DB}\"\n", db.url),
            (None, Some(port)) => format!(
                "  urls = [\"http://127.0.0.1:{port}\"]\n  database = \"{DB}\"\n  \
                 username = \"wk\"\n  password = \"{STREAM_TOKEN}\"\n"
            ),
            (None, None) => unreachable!(),
        };
        let conf = format!(
            "[agent]\n{timing}  hostname = \"{host}\"\n\
             [[outputs.influxdb]]\n{output}{inputs}\n"
        );
        let path = self.dir.path().join("agent.conf");
        std::fs::write(&path, conf).unwrap();
        let p = Spawned::spawn(
            Command::new(agent_binary())
                .arg("--config")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join("agent.log")).unwrap()),
            false,
        )
        .expect("start wk-agent");
        self.agent = Some(p);
    }

    /// Every alerter log so far (for failure messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.runs {
            s += &format!("--- alerter run {i} ---\n");
            s += &std::fs::read_to_string(self.dir.path().join(format!("alerter-{i}.log")))
                .unwrap_or_default();
        }
        s += "--- agent ---\n";
        s += &std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        s
    }

    /// The events the `log` notifier wrote (alerts, recoveries, action reports).
    pub fn events(&self) -> Vec<Value> {
        json_lines(&self.dir.path().join("events.jsonl"))
    }

    /// Action reports (ids ending in `:actions`) in the log.
    pub fn reports(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["id"].as_str().is_some_and(|i| i.ends_with(":actions")))
            .collect()
    }

    /// The audit log (JSON lines).
    pub fn audit(&self) -> Vec<Value> {
        json_lines(&self.dir.path().join("state/actions.log"))
    }

    /// Every email received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let new = self.dir.path().join("mail/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files.iter().map(|p| parse_mail(p)).collect()
    }

    /// Writes one line of line protocol now.
    pub fn write(&self, line: &str) {
        self.db().write(DB, line);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}\n--- events ---\n{:#?}", self.logs(), self.events());
        }
        if let Some(a) = self.agent.take() {
            a.kill();
        }
        if let Some(a) = self.alerter.take() {
            a.kill();
        }
        self.smtp.kill();
    }
}

/// Subject and text body of one received message file.
pub fn parse_mail(p: &Path) -> Mail {
    let out = Command::new(PYTHON)
        .args(["-c", PARSE_MAIL])
        .arg(p)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Mail {
        subject: v["subject"].as_str().unwrap_or_default().to_owned(),
        body: v["plain"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The wk-agent binary of the same build (target/<profile>/wk-agent).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_owned();
    let path = profile_dir.join("wk-agent");
    assert!(
        path.exists(),
        "{} is missing: build the agent first (`cargo build -p wk-agent`, or scripts/test)",
        path.display()
    );
    path
}

/// Escapes a line-protocol tag value (comma, space, equals sign).
pub fn lp_tag(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(' ', "\\ ")
        .replace('=', "\\=")
}
