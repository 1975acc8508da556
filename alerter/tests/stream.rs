//! Stream mode: the receiver answered over real HTTP/1.1 connections (v1 and v2 writes, plain and
//! gzip, every token placement, 401, 413, partial writes as the agent classifies them,
//! keep-alive, Expect: 100-continue, random garbage), and the whole chain with the real
//! binaries: wk-agent's influxdb output → wk-alerter in stream mode → a rule fires → the log
//! notifier's file.

use std::io::Write;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use wk_agent::outputs::influxdb::{Verdict, classify};
use wk_alerter::config::StreamSettings;
use wk_alerter::query::{Aggregate, Query};
use wk_alerter::source::{MemorySource, QuerySource};
use wk_alerter::stream::Receiver;
use wk_core::testing::Xorshift;

const TOKEN: &str = "s3cret-token";

/// The tests write tiny timestamps (ns since the epoch): a window of a century keeps them.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 86400);

async fn receiver(max_body_size: u64) -> (Receiver, Arc<MemorySource>) {
    start(StreamSettings {
        window: CENTURY,
        max_points: 1000,
        max_body_size,
        ..StreamSettings::default()
    })
    .await
}

/// A receiver on a free loopback port taking [`TOKEN`], with `settings` otherwise, and the
/// store it writes to.
async fn start(settings: StreamSettings) -> (Receiver, Arc<MemorySource>) {
    let store = Arc::new(MemorySource::new());
    let settings = StreamSettings {
        listen: "127.0.0.1:0".into(),
        token: TOKEN.into(),
        ..settings
    };
    let r = Receiver::start(&settings, store.clone()).await.unwrap();
    (r, store)
}

/// One HTTP/1.1 connection, answers read by Content-Length.
struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Conn {
    async fn open(r: &Receiver) -> Conn {
        let s = TcpStream::connect(r.local_addr()).await.unwrap();
        let (rd, w) = s.into_split();
        Conn {
            r: BufReader::new(rd),
            w,
        }
    }

    async fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        if !body.is_empty() || method == "POST" {
            req += &format!("Content-Length: {}\r\n", body.len());
        }
        req += "\r\n";
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.w.write_all(&bytes).await.unwrap();
    }

    /// Reads one answer; `None` when the server closed the connection.
    async fn answer(&mut self, head_only: bool) -> Option<Answer> {
        let mut line = String::new();
        if self.r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).await.ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; if head_only { 0 } else { len }];
        self.r.read_exact(&mut body).await.ok()?;
        Some(Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        self.send(method, target, headers, body).await;
        self.answer(method == "HEAD")
            .await
            .expect("the server closed the connection")
    }

    async fn post(&mut self, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        self.request("POST", target, headers, body).await
    }

    /// True when the server closed its side.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.r.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn values(store: &MemorySource, measurement: &str, field: &str) -> Vec<f64> {
    let mut q = Query::new(measurement);
    q.field = Some(field.into());
    q.aggregate = Aggregate::Raw;
    q.range = Duration::from_secs(1_000_000);
    store
        .query(&q, 1_000_000_000_000)
        .unwrap()
        .iter()
        .flat_map(|s| s.rows.iter())
        .map(|r| match &r.values[0] {
            Some(wk_alerter::model::Value::Float(f)) => *f,
            v => panic!("{v:?}"),
        })
        .collect()
}

const AUTH: (&str, &str) = ("Authorization", "Token s3cret-token");

#[tokio::test]
async fn v1_and_v2_writes_plain_and_gzip_with_every_token_placement() {
    let (r, store) = receiver(1 << 20).await;
    let mut c = Conn::open(&r).await;
    // v1, plain, Token header, ns timestamps (what wk-agent sends with content_encoding = "identity").
    let a = c
        .post(
            "/write?db=telegraf",
            &[AUTH],
            b"cpu,host=a busy=1 1000000000\n",
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    // v1, gzip, Basic with the token as password (the agent's default: gzip + username/password).
    let basic = format!(
        "Basic {}",
        wk_agent::common::http::base64(b"wk:s3cret-token")
    );
    let a = c
        .post(
            "/write?db=telegraf",
            &[("Authorization", &basic), ("Content-Encoding", "gzip")],
            &gzip(b"cpu,host=a busy=2 2000000000\n"),
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    // v1, p= query parameter, seconds precision.
    let a = c
        .post(
            "/write?db=telegraf&u=x&p=s3cret-token&precision=s",
            &[],
            b"cpu,host=a busy=3 3\n",
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    // v2, gzip, Bearer.
    let a = c
        .post(
            "/api/v2/write?org=o&bucket=b&precision=ms",
            &[
                ("Authorization", "Bearer s3cret-token"),
                ("Content-Encoding", "gzip"),
            ],
            &gzip(b"cpu,host=a busy=4 4000\ncpu,host=b busy=5 4000\n"),
        )
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(values(&store, "cpu", "busy"), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(r.stats().points.load(Ordering::Relaxed), 5);
    assert_eq!(r.stats().writes.load(Ordering::Relaxed), 4);
}

/// Regression: at a stop, the window was saved while a write was still being received; the
/// agent was then told 204 for points the next start did not have.
#[tokio::test]
async fn a_shutdown_waits_for_the_writes_under_way() {
    let (r, store) = receiver(1 << 20).await;
    let mut c = Conn::open(&r).await;
    let body = b"cpu,host=a busy=1 1000\n";
    let head = format!(
        "POST /write?db=telegraf HTTP/1.1\r\nHost: test\r\nAuthorization: Token {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.w.write_all(head.as_bytes()).await.unwrap();
    c.w.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(r.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "a write is under way");
    c.w.write_all(&body[10..]).await.unwrap();
    assert_eq!(c.answer(false).await.unwrap().status, 204);
    stopping.await.unwrap();
    assert_eq!(store.len(), 1, "the acknowledged point is in the store");
}

#[tokio::test]
async fn wrong_or_missing_token_is_401_and_stores_nothing() {
    let (r, store) = receiver(1 << 20).await;
    let line = b"cpu,host=a busy=1\n";
    for headers in [
        vec![],
        vec![("Authorization", "Token wrong")],
        vec![("Authorization", "Basic d2s6d3Jvbmc=")],
        vec![("Authorization", "Bearer")],
    ] {
        let mut c = Conn::open(&r).await;
        let a = c.post("/write?db=x", &headers, line).await;
        assert_eq!(a.status, 401, "{headers:?}: {a:?}");
        assert_eq!(a.body, r#"{"error":"authorization failed"}"#);
        // Refused on the head: the body is not read, so the connection is not reused.
        assert!(
            a.headers.contains(&("connection".into(), "close".into())),
            "{a:?}"
        );
        assert!(c.closed().await);
    }
    let mut c = Conn::open(&r).await;
    let a = c.post("/write?db=x&p=nope", &[], line).await;
    assert_eq!(a.status, 401);
    let mut c = Conn::open(&r).await;
    let a = c.post("/api/v2/write", &[], line).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        r#"{"code":"unauthorized","message":"unauthorized access"}"#
    );
    // Without a body the connection stays usable.
    let mut c = Conn::open(&r).await;
    let a = c.request("GET", "/query?q=SHOW+DATABASES", &[], b"").await;
    assert_eq!(a.status, 401);
    assert_eq!(c.request("GET", "/ping", &[], b"").await.status, 204);
    // Expect: 100-continue without the token: 401 at once, no 100 (the body is never asked for).
    let mut c = Conn::open(&r).await;
    c.w.write_all(
        b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(c.answer(false).await.unwrap().status, 401);
    assert!(store.is_empty());
    assert_eq!(r.stats().unauthorized.load(Ordering::Relaxed), 8);
    // Not one body byte of a refused request was read (regression: bodies were read in full
    // before the token was checked).
    assert_eq!(r.stats().body_bytes.load(Ordering::Relaxed), 0);
    // The agent drops a batch answered 401 (logged, counted), it does not retry it forever.
    assert!(matches!(
        classify(401, r#"{"error":"authorization failed"}"#, 3),
        Verdict::Rejected(3, _)
    ));
}

#[tokio::test]
async fn ping_query_and_unknown_paths() {
    let (r, _store) = receiver(1 << 20).await;
    let mut c = Conn::open(&r).await;
    assert_eq!(c.request("GET", "/ping", &[], b"").await.status, 204);
    let a = c.request("HEAD", "/ping", &[], b"").await;
    assert_eq!(a.status, 204);
    assert!(a.headers.iter().any(|(k, _)| k == "x-influxdb-version"));
    // What the agent sends before its first write.
    let a = c
        .post(
            "/query",
            &[AUTH, ("Content-Type", "application/x-www-form-urlencoded")],
            b"q=CREATE+DATABASE+%22telegraf%22",
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, r#"{"results":[{"statement_id":0}]}"#);
    let a = c
        .request("GET", "/query?q=SELECT+*+FROM+cpu", &[AUTH], b"")
        .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("answers no queries"), "{a:?}");
    assert_eq!(c.request("GET", "/nope", &[AUTH], b"").await.status, 404);
    assert_eq!(c.request("GET", "/write", &[AUTH], b"").await.status, 405);
    assert_eq!(c.request("GET", "/health", &[], b"").await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_before_and_after_gzip() {
    let (r, store) = receiver(1024).await;
    let mut c = Conn::open(&r).await;
    let big = "cpu,host=a busy=1\n".repeat(100);
    let a = c.post("/write", &[AUTH], big.as_bytes()).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("max_body_size"), "{a:?}");
    // The unread body makes the connection unusable: the server closes it.
    assert!(c.closed().await);
    // A small gzip body that inflates beyond the limit.
    let mut c = Conn::open(&r).await;
    let bomb = gzip(big.as_bytes());
    assert!(bomb.len() < 1024);
    let a = c
        .post("/write", &[AUTH, ("Content-Encoding", "gzip")], &bomb)
        .await;
    assert_eq!(a.status, 413, "{a:?}");
    let a = c
        .post("/write", &[AUTH, ("Content-Encoding", "gzip")], b"not gzip")
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    let a = c
        .post("/write", &[AUTH, ("Content-Encoding", "br")], b"x")
        .await;
    assert_eq!(a.status, 415, "{a:?}");
    // The body is parsed as it is decompressed: lines before the limit may be stored (here
    // one point, the same series and time). A resent batch rewrites them: no duplicates.
    assert!(store.len() <= 1);
    // A v2 client splits the batch on 413 (wk-agent's influxdb_v2 output does).
    let a = c.post("/api/v2/write", &[AUTH], big.as_bytes()).await;
    assert_eq!(a.status, 413);
    assert!(a.body.contains("\"code\":\"request too large\""), "{a:?}");
}

#[tokio::test]
async fn malformed_lines_are_a_partial_write_the_agent_counts_as_rejected() {
    let (r, store) = receiver(1 << 20).await;
    let mut c = Conn::open(&r).await;
    let body = b"cpu,host=a busy=1 1\ncpu,host=a busy= 2\ncpu,host=a busy=3 3\nnofields 4\n";
    let a = c.post("/write?db=x", &[AUTH], body).await;
    assert_eq!(a.status, 400, "{a:?}");
    let msg = wk_agent::outputs::influxdb::error_text(&a.body);
    assert!(
        msg.starts_with("partial write: unable to parse 'cpu,host=a busy= 2': "),
        "{msg}"
    );
    assert!(msg.contains("\nunable to parse 'nofields 4': "), "{msg}");
    // The good lines (before and after the bad ones) are kept.
    assert_eq!(values(&store, "cpu", "busy"), vec![1.0, 3.0]);
    // The agent's influxdb output: 2 of 4 rejected for good, the batch is not retried.
    match classify(a.status, &a.body, 4) {
        Verdict::Rejected(2, _) => {}
        v => panic!("{v:?}"),
    }
    // More bad lines than are quoted: the rest are counted in dropped=.
    let body = "x\n".repeat(30);
    let a = c.post("/write?db=x", &[AUTH], body.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert!(!a.body.contains("partial write"), "nothing stored: {a:?}");
    assert!(matches!(
        classify(a.status, &a.body, 30),
        Verdict::Rejected(30, _)
    ));
    assert_eq!(r.stats().rejected_lines.load(Ordering::Relaxed), 32);
    // The connection is still good.
    assert_eq!(c.request("GET", "/ping", &[], b"").await.status, 204);
}

#[tokio::test]
async fn keep_alive_expect_continue_and_connection_close() {
    let (r, store) = receiver(1 << 20).await;
    let mut c = Conn::open(&r).await;
    for i in 0..20 {
        let line = format!("m,host=a v={i} {}\n", i + 1);
        let a = c.post("/write", &[AUTH], line.as_bytes()).await;
        assert_eq!(a.status, 204);
    }
    // A refused request without a body keeps the connection too.
    assert_eq!(c.request("GET", "/query?q=x", &[], b"").await.status, 401);
    assert_eq!(store.len(), 20);
    // Expect: 100-continue (curl sends it for bodies over 1 KiB): 100, then the answer.
    c.send(
        "POST",
        "/write",
        &[AUTH, ("Expect", "100-continue")],
        b"m,host=b v=1 1\n",
    )
    .await;
    let cont = c.answer(false).await.unwrap();
    assert_eq!(cont.status, 100);
    assert_eq!(c.answer(false).await.unwrap().status, 204);
    // Chunked bodies.
    let req = b"POST /write HTTP/1.1\r\nAuthorization: Token s3cret-token\r\nTransfer-Encoding: chunked\r\n\r\nf\r\nm,host=c v=1 1\n\r\n0\r\n\r\n";
    c.w.write_all(req).await.unwrap();
    assert_eq!(c.answer(false).await.unwrap().status, 204);
    assert_eq!(store.len(), 22);
    // Connection: close is honoured.
    let a = c
        .request("GET", "/ping", &[("Connection", "close")], b"")
        .await;
    assert_eq!(a.status, 204);
    assert!(c.closed().await);
}

/// `n` bytes from `rng` (deterministic, so failures reproduce): raw bytes mixed with line
/// protocol and HTTP punctuation, to reach deeper paths.
fn garbage(rng: &mut Xorshift, n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b" ,=\\\"\n\r\t:/?&%0123456789.eEtfiu-+#aZ\xc3\xa9\xff\x00";
    (0..n)
        .map(|_| {
            let x = rng.next_u64();
            if x.is_multiple_of(3) {
                (x >> 8) as u8
            } else {
                ALPHABET[(x >> 8) as usize % ALPHABET.len()]
            }
        })
        .collect()
}

#[tokio::test]
async fn random_garbage_never_breaks_the_receiver() {
    let (r, store) = receiver(64 * 1024).await;
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    // Garbage as line protocol bodies (plain and claimed gzip) on an authorized connection.
    let mut c = Conn::open(&r).await;
    for i in 0..300 {
        let n = (rng.next_u64() % 400) as usize;
        let body = garbage(&mut rng, n);
        let headers: &[(&str, &str)] = if i % 5 == 0 {
            &[AUTH, ("Content-Encoding", "gzip")]
        } else {
            &[AUTH]
        };
        let a = c.post("/write?db=x", headers, &body).await;
        assert!(matches!(a.status, 204 | 400), "{a:?}");
    }
    // Garbage as whole requests, each on its own connection.
    for _ in 0..200 {
        let n = (rng.next_u64() % 600) as usize;
        let mut junk = garbage(&mut rng, n);
        if rng.next_u64().is_multiple_of(2) {
            let mut req = b"POST /write?p=s3cret-token HTTP/1.1\r\n".to_vec();
            req.append(&mut junk);
            junk = req;
        }
        let mut s = TcpStream::connect(r.local_addr()).await.unwrap();
        let _ = s.write_all(&junk).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    // Still serving.
    let mut c = Conn::open(&r).await;
    assert_eq!(c.request("GET", "/ping", &[], b"").await.status, 204);
    let a = c.post("/write", &[AUTH], b"alive v=1 1\n").await;
    assert_eq!(a.status, 204);
    assert!(!store.is_empty());
}

fn at(unit: i64, now: i64) -> wk_alerter::stream::Intake {
    wk_alerter::stream::Intake::new(unit, now)
}

#[test]
fn ingest_and_parse_survive_random_text() {
    let store = MemorySource::new();
    let mut rng = Xorshift(42);
    for _ in 0..20_000 {
        let n = (rng.next_u64() % 120) as usize;
        let bytes = garbage(&mut rng, n);
        let text = String::from_utf8_lossy(&bytes);
        let got = wk_alerter::stream::ingest(&text, &at(1_000, 7), &store);
        assert!(got.errors.len() <= got.bad);
    }
    store.enforce_max_points(10);
    assert!(store.len() <= 10);
}

// ---- end to end: the real wk-agent → the real wk-alerter in stream mode -------------------

use wk_core::testing::wait_for;

use crate::tools::agent_binary;

use crate::common::alerter::{Logged, crit_rule, event_at, write_agent_conf, write_alerter_conf};
use wk_core::testing::free_port;

fn ping(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 204")
}

#[test]
fn agent_writes_to_the_alerter_in_stream_mode_and_a_rule_fires() {
    let agent = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (alerter_conf, events) = write_alerter_conf(
        dir.path(),
        &format!(
            "[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"${{WK_STREAM_TOKEN}}\"\n  window = \"10m\"\n"
        ),
    );
    let rules = dir.path().join("rules");
    // Memory used is always ≥ 0 %: this rule must fire as soon as one point arrived.
    std::fs::write(
        rules.join("mem_any.rhai"),
        crit_rule(
            r#"every: "1s", notify: ["log"], message: "{{host}}: memory {{value:.1}}% used""#,
            r#"query("mem").field("used_percent").range("1m").last().group_by("host")"#,
            "s.value >= 0.0",
        ),
    )
    .unwrap();
    // cpu arrives only through the agent's influxdb_v2 output (namepass below).
    std::fs::write(
        rules.join("cpu_any.rhai"),
        crit_rule(
            r#"every: "1s", notify: ["log"]"#,
            r#"query("cpu").field("usage_idle").where("cpu", "cpu-total").range("1m").last().group_by("host")"#,
            "s.value >= 0.0",
        ),
    )
    .unwrap();
    let agent_conf = write_agent_conf(
        dir.path(),
        &format!(
            "[[outputs.influxdb]]\n  namepass = [\"mem\"]\n  urls = [\"http://127.0.0.1:{port}\"]\n  database = \"telegraf\"\n  \
             username = \"wk\"\n  password = \"${{WK_STREAM_TOKEN}}\"\n\
             [[outputs.influxdb_v2]]\n  namepass = [\"cpu\"]\n  urls = [\"http://127.0.0.1:{port}\"]\n  token = \"${{WK_STREAM_TOKEN}}\"\n  \
             organization = \"wk\"\n  bucket = \"telegraf\"\n"
        ),
    );
    let env = [("WK_STREAM_TOKEN", "e2e-token-0123456789")];
    let alerter = Logged::alerter(&alerter_conf, &env, dir.path().join("alerter.log"));
    wait_for("the stream endpoint", Duration::from_secs(20), || {
        ping(port)
    });
    assert!(
        alerter.log().contains(&format!("127.0.0.1:{port}")),
        "the listen address is logged:\n{}",
        alerter.log()
    );
    let agent = Logged::start(&agent, &agent_conf, &[], &env, dir.path().join("agent.log"));
    let fired = || event_at(&events, "mem_any", "CRITICAL");
    wk_core::testing::poll_until(Duration::from_secs(30), || fired().is_some());
    let event = fired().unwrap_or_else(|| {
        panic!(
            "no CRITICAL event from mem_any within 30 s\n--- alerter ---\n{}\n--- agent ---\n{}",
            alerter.log(),
            agent.log()
        )
    });
    let host = event["tags"]["host"].as_str().unwrap_or("");
    assert!(!host.is_empty(), "{event}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{host}: memory ")),
        "{event}"
    );
    wait_for(
        "cpu_any (the influxdb_v2 output's points) to fire",
        Duration::from_secs(30),
        || event_at(&events, "cpu_any", "CRITICAL").is_some(),
    );
    // Both outputs (v1 and v2 write APIs) delivered: no warning about database creation, no
    // write refused or failed.
    let agent_text = agent.log();
    assert!(
        !agent_text.contains("creating database")
            && !agent_text.contains("rejected")
            && !agent_text.contains("failed"),
        "{agent_text}"
    );
}

#[tokio::test]
async fn window_and_max_points_bound_what_is_held() {
    let (r, store) = start(StreamSettings {
        window: Duration::from_secs(60),
        max_points: 5,
        max_body_size: 1 << 20,
        ..StreamSettings::default()
    })
    .await;
    let mut c = Conn::open(&r).await;
    let now = wk_alerter::clock::now_ns();
    let s = 1_000_000_000;
    // A point older than the window is forgotten by the background pruning.
    let old = format!("m,host=b v=1 {}\n", now - 3600 * s);
    let a = c.post("/write", &[AUTH], old.as_bytes()).await;
    assert_eq!(a.status, 204);
    let start = Instant::now();
    while !store.is_empty() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.is_empty(), "host=b pruned");
    // Ten recent points: only the newest five are held, five counted as dropped.
    let body: String = (0..10)
        .map(|i| format!("m,host=a v={i} {}\n", now - (10 - i) * s))
        .collect();
    let a = c.post("/write", &[AUTH], body.as_bytes()).await;
    assert_eq!(a.status, 204);
    assert_eq!(store.len(), 5);
    assert_eq!(store.dropped(), 5);
    assert_eq!(store.latest_time(), Some(now - s));
}

/// Regression (issue 15 item 5): a token holder wrote 100,001 points dated 2100; they evicted
/// every real point (max_points) and, never expiring, kept the hosts NoData for good.
#[tokio::test]
async fn points_from_the_far_future_are_refused_and_evict_nothing() {
    assert_eq!(StreamSettings::default().max_points, 100_000);
    let (r, store) = start(StreamSettings::default()).await;
    let mut c = Conn::open(&r).await;
    let now = wk_alerter::clock::now_ns();
    let real = format!("cpu,host=real busy=1 {now}\n");
    assert_eq!(c.post("/write", &[AUTH], real.as_bytes()).await.status, 204);
    // 2100-01-01, in seconds.
    let flood: String = (0..100_001)
        .map(|i| format!("cpu,host=h{i} busy=9 4102444800\n"))
        .collect();
    let a = c
        .post("/write?precision=s", &[AUTH], flood.as_bytes())
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    let msg = wk_agent::outputs::influxdb::error_text(&a.body);
    assert!(
        msg.starts_with("partial write: points beyond retention policy"),
        "{msg}"
    );
    // The agent counts every one of them as rejected and does not resend them.
    assert!(matches!(
        classify(a.status, &a.body, 100_001),
        Verdict::Rejected(100_001, _)
    ));
    assert_eq!(r.stats().future_points.load(Ordering::Relaxed), 100_001);
    // The real point is still there, alone.
    assert_eq!(store.len(), 1);
    assert_eq!(store.latest_time(), Some(now));
    // Within max_future (10 min by default) a point is kept; a mixed body is a partial write.
    let soon = format!(
        "cpu,host=real busy=2 {}\ncpu,host=real busy=3 {}\nbad\n",
        now + 60_000_000_000,
        now + 3_600_000_000_000
    );
    let a = c.post("/write", &[AUTH], soon.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("dropped=1"), "{a:?}");
    assert!(matches!(
        classify(a.status, &a.body, 3),
        Verdict::Rejected(2, _)
    ));
    assert_eq!(store.len(), 2);
}

/// The window is bounded by bytes (issue 15 item 6): strings allowed up to 2 MiB, 8 MiB held.
#[tokio::test]
async fn max_bytes_bounds_the_window_by_memory() {
    let (r, store) = start(StreamSettings {
        window: CENTURY,
        max_body_size: 64 << 20,
        max_string_size: 2 << 20,
        max_bytes: 8 << 20,
        ..StreamSettings::default()
    })
    .await;
    let mut c = Conn::open(&r).await;
    let big = "s".repeat(1 << 20);
    // Distinct strings: one equal to the previous costs a bit.
    let body: String = (1..=20)
        .map(|t| format!("log,host=a msg=\"{t:02}{}\" {t}\n", &big[2..]))
        .collect();
    let a = c.post("/write", &[AUTH], body.as_bytes()).await;
    assert_eq!(a.status, 204, "{a:?}");
    assert!(store.bytes() <= 8 << 20, "{}", store.bytes());
    // The newest seven 1 MiB points fit; the oldest were dropped and counted.
    assert_eq!(store.len(), 7);
    assert_eq!(store.latest_time(), Some(20));
    assert_eq!(store.dropped(), 13);
    // Over max_string_size: the line is refused, quoted with the reason.
    let huge = format!("log,host=a msg=\"{}\" 21\n", "s".repeat((2 << 20) + 1));
    let a = c.post("/write", &[AUTH], huge.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("over max_string_size"), "{a:?}");
}

/// Chunked bodies over a real socket (property test, issue 10 item 14): any split of a body
/// into chunks (with chunk extensions) stores what the unsplit body stores, and arbitrary bytes
/// after a chunked head never break the receiver.
#[test]
fn chunked_bodies_any_split_same_points_and_garbage_is_harmless() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (r, store) = rt.block_on(receiver(64 * 1024));
    let addr = r.local_addr();
    let chunked = |body: &[u8], cuts: &[usize]| {
        let mut out =
            b"POST /write HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Token s3cret-token\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&body.len())) {
            let end = c.clamp(at, body.len());
            if end > at {
                out.extend(format!("{:x};ext=1\r\n", end - at).into_bytes());
                out.extend(&body[at..end]);
                out.extend(b"\r\n");
            }
            at = end;
        }
        out.extend(b"0\r\n\r\n");
        out
    };
    // `half_close`: end our side after the request (hyper then drops the connection at once;
    // garbage must not leave it waiting for more).
    let exchange = |req: Vec<u8>, half_close: bool| -> Option<u16> {
        rt.block_on(async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(&req).await.ok()?;
            if half_close {
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out)
                .split(' ')
                .nth(1)?
                .parse()
                .ok()
        })
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    });
    let lines = proptest::collection::vec((0u32..50, 0i64..1000), 1..40);
    let cuts = proptest::collection::vec(0usize..2000, 0..20);
    runner
        .run(&(lines, cuts), |(lines, mut cuts)| {
            cuts.sort_unstable();
            let body: String = lines
                .iter()
                .map(|(h, t)| format!("chunk,host=h{h} v={t}i {}\n", t + 1))
                .collect();
            let expected = MemorySource::new();
            wk_alerter::stream::ingest(&body, &at(1, 0), &expected);
            prop_assert_eq!(exchange(chunked(body.as_bytes(), &cuts), false), Some(204));
            let mut q = Query::new("chunk");
            q.field = Some("v".into());
            q.aggregate = Aggregate::Count;
            q.range = Duration::from_secs(1_000_000);
            let count = |s: &MemorySource| s.query(&q, 1_000_000_000).unwrap().len();
            // Every series of the body is in the store (the store accumulates across cases).
            prop_assert!(count(&store) >= count(&expected));
            Ok(())
        })
        .unwrap();
    let garbage = proptest::collection::vec(any::<u8>(), 0..300);
    runner
        .run(&garbage, |junk| {
            let mut req = chunked(b"", &[]);
            req.truncate(req.len() - 5);
            req.extend(junk);
            let status = exchange(req, true);
            prop_assert!(
                matches!(status, None | Some(204 | 400 | 408 | 413)),
                "{status:?}"
            );
            Ok(())
        })
        .unwrap();
    // Still serving.
    assert_eq!(
        exchange(
            b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            false
        ),
        Some(204)
    );
}

/// TLS (issue 15 item 7): with tls_cert/tls_key (made by openssl here) the receiver speaks
/// HTTPS; a client that trusts the certificate writes with its token, plain HTTP gets nowhere.
#[tokio::test]
async fn tls_with_an_openssl_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = wk_core::testing::self_signed_cert(dir.path()) else {
        return;
    };
    let (r, store) = start(StreamSettings {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        ..StreamSettings::default()
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://{}/write?db=x", r.local_addr());
    let a = client
        .post(&url)
        .header("Authorization", format!("Token {TOKEN}"))
        .body("tls,host=a v=1 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 204);
    assert_eq!(store.len(), 1);
    let a = client.post(&url).body("tls v=2 2\n").send().await.unwrap();
    assert_eq!(a.status(), 401);
    // Plain HTTP on the TLS port: no answer.
    let mut c = Conn::open(&r).await;
    c.send("GET", "/ping", &[], b"").await;
    assert!(c.answer(false).await.is_none());
    // An untrusting client fails the handshake.
    let plain = reqwest::Client::new();
    assert!(
        plain
            .get(format!("https://{}/ping", r.local_addr()))
            .send()
            .await
            .is_err()
    );
}
