//! The stream receiver under hostile clients, against the real wk-alerter process (its memory
//! is read from /proc/<pid>/status): unauthenticated uploads, slow connections, points in the
//! far future, huge strings and huge bodies. Loopback only, bounded in count and time.
//!
//! `WK_TEST_ALERTER` runs them against another build (e.g. the code before a fix).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::alerter::{Logged, alerter_section};

/// A strong token (16+ characters).
const TOKEN: &str = "limits-test-token-0123456789";

/// A wk-alerter in stream mode, killed on drop.
struct Alerter {
    process: Logged,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alerter {
    /// Starts one with these extra `[stream]` options and waits until /ping answers.
    fn start(stream_options: &str) -> Alerter {
        let dir = tempfile::tempdir().unwrap();
        let port = wk_core::testing::free_port();
        let conf = dir.path().join("alerter.conf");
        std::fs::write(
            &conf,
            format!(
                "{}[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{TOKEN}\"\n{stream_options}\n",
                alerter_section(dir.path(), "")
            ),
        )
        .unwrap();
        let bin = std::env::var("WK_TEST_ALERTER")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wk-alerter").to_owned());
        let env = [("RUST_LOG", "info")];
        let log = dir.path().join("alerter.log");
        let process = Logged::start(Path::new(&bin), &conf, &["run"], &env, log);
        let mut a = Alerter {
            process,
            port,
            _dir: dir,
        };
        // Until /ping answers.
        a.process.wait_ready(Duration::from_secs(20), || {
            request(port, "GET", "/ping", &[], b"").map(|r| r.0) == Some(204)
        });
        a
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM` = peak resident).
    fn status_kib(&self, key: &str) -> u64 {
        let pid = self.process.child.id();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{key} not in /proc status"))
    }
}

/// One request on its own connection: (status, body), `None` when the connection failed.
fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    // Generous: a 30 MB body through a debug build on 2 busy cores takes several seconds.
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Fails the test unless memory grew by less than `limit_mib` MiB from `before` to `after`
/// (KiB, as [`Alerter::status_kib`] reads them).
#[track_caller]
fn assert_grew_less_than(limit_mib: u64, before: u64, after: u64, what: &str) {
    let grown = after.saturating_sub(before);
    assert!(grown < limit_mib << 10, "{what}: +{} MiB", grown >> 10);
}

const AUTH: (&str, &str) = ("Authorization", "Token limits-test-token-0123456789");

/// Regression (issue 15 item 3): bodies were read before the token was checked, so 200
/// parallel 31 MiB uploads without a token took 2.95 GB.
#[test]
fn uploads_without_a_token_are_refused_on_the_head_and_cost_no_memory() {
    const UPLOADS: usize = 24;
    const SIZE: usize = 31 << 20;
    let a = Alerter::start("");
    let before = a.status_kib("VmRSS");
    let port = a.port;
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|_| {
            std::thread::spawn(move || -> (usize, Option<u16>) {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let head = format!(
                    "POST /write?db=x HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                let chunk = b"cpu,host=flood busy=1\n".repeat(3000);
                let mut sent = 0;
                while sent < SIZE {
                    let n = chunk.len().min(SIZE - sent);
                    if s.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = s.shutdown(Shutdown::Write);
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
                (sent, status)
            })
        })
        .collect();
    let mut refused_early = 0;
    for u in uploads {
        let (sent, status) = u.join().unwrap();
        // 401 when the client could read it, a reset otherwise; never stored.
        assert!(matches!(status, None | Some(401)), "{status:?}");
        if sent < SIZE {
            refused_early += 1;
        }
    }
    let peak = a.status_kib("VmHWM");
    eprintln!(
        "{UPLOADS} uploads of {} MiB without a token: RSS before {before} KiB, peak {peak} KiB \
         (+{} MiB); {refused_early} cut off before their end",
        SIZE >> 20,
        (peak - before) >> 10
    );
    // Reading the bodies would take UPLOADS × 31 MiB = 744 MiB.
    assert_grew_less_than(48, before, peak, "peak RSS");
    assert!(
        refused_early > 0,
        "the connections were closed on the uploads"
    );
    // Failed authentication is logged, once a minute per peer (issue 15 item 7).
    let log = a.log();
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("without a valid token"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("peer=127.0.0.1"), "{log}");
    // Still serving writes that carry the token.
    assert_eq!(
        request(a.port, "POST", "/write", &[AUTH], b"ok v=1\n").map(|r| r.0),
        Some(204)
    );
}

/// A connection from `from` (a loopback address) that sends half a request head and stops.
fn slow_connection(from: [u8; 4], port: u16) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.bind(&std::net::SocketAddr::from((from, 0)).into()).ok()?;
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .ok()?;
    let mut s: TcpStream = s.into();
    s.write_all(b"POST /write?db=x HTTP/1.1\r\nHost: slow\r\n")
        .ok()?;
    Some(s)
}

/// An authenticated write on a new connection: its status and how long it took.
fn timed_write(port: u16) -> (Option<u16>, Duration) {
    let start = Instant::now();
    let r = request(port, "POST", "/write", &[AUTH], b"ok,from=writer v=1\n").map(|r| r.0);
    (r, start.elapsed())
}

/// Regression (issue 15 item 4): 600 connections that never finish their head held all 512
/// slots for 60 s and every write, with its token, was refused.
#[test]
fn slow_connections_without_a_token_never_starve_writers() {
    // The default header timeout (5 s).
    let a = Alerter::start("");
    // 600 from the writer's own address (the per-peer limit) ...
    let slow: Vec<_> = (0..600)
        .filter_map(|_| slow_connection([127, 0, 0, 1], a.port))
        .collect();
    let (status, took) = timed_write(a.port);
    eprintln!("600 slow connections from 127.0.0.1: authenticated write {status:?} in {took:?}");
    assert_eq!(status, Some(204), "{}", a.log());
    // Starved, it would wait for the 5 s header timeout to free a slot (60 s before the fix);
    // 3 s leaves room for a loaded machine running the suite's heaviest tests beside it.
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(slow);
    // ... and 600 from 20 other addresses, 30 each (under the per-peer limit: the pending cap).
    let slow: Vec<_> = (0..600)
        .filter_map(|i| slow_connection([127, 0, 0, 2 + (i % 20) as u8], a.port))
        .collect();
    assert!(slow.len() > 500);
    let (status, took) = timed_write(a.port);
    eprintln!("600 slow connections from 20 addresses: authenticated write {status:?} in {took:?}");
    assert_eq!(status, Some(204));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The slow ones still open are closed once the header timeout has passed.
    let mut one = slow.into_iter().last().unwrap();
    one.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = one.read(&mut buf);
    assert!(matches!(n, Ok(0)), "closed without an answer: {n:?}");
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );
}

/// Regression (issue 15 item 6): 1,020 points with 1 MB strings grew RSS to 1.07 GB, and one
/// 1,000,000-line body peaked at 793 MB before max_points applied. With the defaults
/// (max_string_size 64 KiB, max_bytes 256 MiB, max_points 100,000, applied while parsing)
/// neither costs more than the window's bound.
#[test]
fn huge_strings_and_a_million_lines_stay_within_the_window_bounds() {
    let a = Alerter::start("");
    let before = a.status_kib("VmRSS");
    // 34 writes of 30 points with a 1 MB string each.
    let big = "s".repeat(1 << 20);
    let mut refused = 0;
    for w in 0..34 {
        let body: String = (0..30)
            .map(|i| format!("log,host=h{w} msg=\"{big}\" {}\n", w * 30 + i + 1))
            .collect();
        let r = request(a.port, "POST", "/write", &[AUTH], body.as_bytes());
        let (status, text) = r.expect("answered");
        assert_eq!(status, 400, "{text}");
        refused += 1;
    }
    let after_strings = a.status_kib("VmHWM");
    // One body of 1,000,000 lines (30 MB), all distinct series.
    let body: String = (0..1_000_000)
        .map(|i| format!("m,host=h{i} v={i}i\n"))
        .collect();
    assert!(body.len() < 32 << 20);
    let r = request(a.port, "POST", "/write", &[AUTH], body.as_bytes());
    assert_eq!(r.map(|r| r.0), Some(204));
    let peak = a.status_kib("VmHWM");
    eprintln!(
        "RSS before {before} KiB; after {refused} writes of 30 × 1 MB strings: peak {after_strings} KiB \
         (+{} MiB); after a 1,000,000-line body: peak {peak} KiB (+{} MiB)",
        (after_strings - before) >> 10,
        (peak - before) >> 10
    );
    assert_grew_less_than(128, before, after_strings, "1 MB strings");
    // 100,000 points held (≈ 20 MB) plus the body in flight and the parser's slack: 173 and
    // 181 MiB on a quiet 2-core machine, 201 during a full suite with a build beside it
    // (it failed at 200). What this guards is the order of magnitude: unbounded, it is GBs.
    assert_grew_less_than(256, before, peak, "1,000,000 lines");
}
