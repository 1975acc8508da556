//! Helpers for the notify tests: events, plans from TOML, free ports, a tiny HTTP sink.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wk_alerter::model::{AlertEvent, EventKind, Level, Value};
use wk_alerter::notify::{NotifyPlan, load_str};

/// An event with sensible defaults; change fields as needed.
pub fn event(rule: &str, host: &str, kind: EventKind, level: Level) -> AlertEvent {
    AlertEvent {
        rule: rule.into(),
        id: format!("{rule}:host={host}"),
        message: format!("{host}: {rule} is {level}"),
        details: format!("details of {rule} on {host}"),
        kind,
        level,
        previous_level: if kind == EventKind::Recovery {
            Level::Critical
        } else {
            Level::Ok
        },
        tags: wk_alerter::model::Tags::from([("host".to_owned(), host.to_owned())]),
        fields: wk_alerter::model::Fields::from([("value".to_owned(), Value::Float(93.25))]),
        time: 1_795_000_000_000_000_000,
        duration: Duration::from_secs(65),
        ..Default::default()
    }
}

/// Routes `e` to `names`.
pub fn to(mut e: AlertEvent, names: &[&str]) -> AlertEvent {
    e.notify = names.iter().map(|s| s.to_string()).collect();
    e
}

/// A plan from TOML; `env` pairs are the only environment the config sees.
pub fn plan_env(toml: &str, env: &[(&str, &str)]) -> NotifyPlan {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match load_str("alerter.toml", toml, &lookup) {
        Ok((plan, _warnings)) => plan,
        Err(e) => panic!("config did not load:\n{e}"),
    }
}

/// A plan from TOML with an empty environment.
pub fn plan(toml: &str) -> NotifyPlan {
    plan_env(toml, &[])
}

/// The config errors of `toml`, one string per error.
pub fn config_errors(toml: &str) -> Vec<String> {
    match load_str("alerter.toml", toml, &|_| None) {
        Ok(_) => panic!("config loaded but should not have"),
        Err(e) => e.errors.iter().map(|d| d.to_string()).collect(),
    }
}

pub use wk_core::testing::free_port;

/// True when `path` exists; otherwise fails the test, or returns false (skip) when
/// WK_SKIP_SERVERS=1.
pub fn require(path: &str, what: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    wk_core::testing::missing_server(path, what).is_some()
}

/// Waits until something accepts TCP connections on `port` (readiness, not a sleep).
pub async fn wait_port(port: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request the HTTP sink received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// An HTTP/1.1 server on port 0 that records requests and answers each with the next status
/// of `statuses` (the last one repeats).
pub struct HttpSink {
    pub port: u16,
    pub requests: mpsc::UnboundedReceiver<Request>,
}

impl HttpSink {
    pub async fn start(statuses: Vec<u16>) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(statuses));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    while let Some(req) = read_request(&mut sock).await {
                        let status = {
                            let mut s = statuses.lock().unwrap();
                            if s.len() > 1 { s.remove(0) } else { s[0] }
                        };
                        let _ = tx.send(req);
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HttpSink { port, requests: rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next request, failing after 10 s.
    pub async fn next(&mut self) -> Request {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("a request within 10s")
            .expect("sink running")
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
