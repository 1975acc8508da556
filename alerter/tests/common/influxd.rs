//! A real InfluxDB 1.x (`influxd` from the Debian `influxdb` package) for tests: started in a
//! temp dir on free loopback ports, waited for with `/ping`, killed when dropped.
//!
//! If `influxd` is missing the test fails with a message saying how to install it, unless
//! `WK_SKIP_SERVERS=1` (then [`Influxd::start`] returns `None` and the test returns early).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running influxd.
pub struct Influxd {
    child: Child,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    /// Basic credentials the helper methods send (set by [`Influxd::start_with_auth`]).
    credentials: Option<(String, String)>,
}

fn spawn(bin: &std::path::Path, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("influxd.log"))
        .expect("log file");
    let log2 = log.try_clone().expect("log file");
    let mut cmd = Command::new(bin);
    cmd.arg("-config")
        .arg(dir.join("influxdb.conf"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // A test or bench killed hard (no Drop) takes its influxd with it instead of leaving it
    // running. The signal comes when the thread that started it ends: every user holds the
    // server in the thread that started it.
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec and makes one system call
    // (no allocation, no lock).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Whether tests may skip real servers that are not installed.
fn find_influxd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("influxd"))
        .find(|p| p.is_file())
}

pub use wk_core::testing::free_port;

impl Influxd {
    /// Starts influxd and waits until `/ping` answers 204 (at most 60 s).
    pub fn start() -> Option<Influxd> {
        Influxd::launch(false, "")
    }

    /// Like [`Influxd::start`] with more `[data]` settings (TOML lines, e.g. the compaction
    /// delays a benchmark shortens).
    pub fn start_with_data_settings(settings: &str) -> Option<Influxd> {
        Influxd::launch(false, settings)
    }

    /// Like [`Influxd::start`] with authentication on and an admin `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Option<Influxd> {
        let mut me = Influxd::launch(true, "")?;
        // The first admin user may be created without credentials.
        me.exec(&format!(
            "CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
        ));
        me.credentials = Some((user.to_owned(), password.to_owned()));
        Some(me)
    }

    fn launch(auth: bool, data_settings: &str) -> Option<Influxd> {
        let Some(bin) = find_influxd() else {
            return wk_core::testing::missing_server("influxd", "influxdb").map(|n| match n {});
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, rpc_port) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n{data_settings}\n\
             [monitor]\n  store-enabled = false\n\
             [subscriber]\n  enabled = false\n\
             [continuous_queries]\n  enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  auth-enabled = {auth}\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).expect("write influxdb.conf");
        let child = spawn(&bin, dir.path());
        let mut me = Influxd {
            child,
            bin,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            port,
            credentials: None,
        };
        me.wait_ready();
        Some(me)
    }

    /// Where influxd keeps its TSM files (`data/<db>/<rp>/<shard>/`) and its WAL.
    pub fn data_dirs(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("data"), self.dir.path().join("wal"))
    }

    /// influxd's process id (the benchmark reads its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills influxd (an outage begins); its data stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts influxd again on the same port and data, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.bin, self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let me = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((204, _)) = me.http("GET", "/ping", "") {
                return;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!(
                    "influxd exited with {status} before it was ready:\n{}",
                    me.log()
                );
            }
            if Instant::now() > deadline {
                panic!("influxd did not answer /ping within 60 s:\n{}", me.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// influxd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    /// One HTTP/1.1 request with `Connection: close`; returns status and body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = match &self.credentials {
            Some((u, p)) => format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}"))),
            None => String::new(),
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }

    /// Runs a statement with POST /query (for CREATE DATABASE and the like); panics on error.
    pub fn exec(&self, q: &str) {
        let (status, body) = self
            .http("POST", "/query", &format!("q={}", urlencode(q)))
            .expect("POST /query");
        assert!(
            status == 200 && !body.contains("\"error\""),
            "{q}: HTTP {status}: {body}"
        );
    }

    /// Creates a database.
    pub fn create_database(&self, db: &str) {
        self.exec(&format!("CREATE DATABASE \"{db}\""));
    }

    /// Writes line protocol (ns precision); panics unless InfluxDB answers 204.
    pub fn write(&self, db: &str, lines: &str) {
        let (status, body) = self
            .http(
                "POST",
                &format!("/write?db={}&precision=ns", urlencode(db)),
                lines,
            )
            .expect("POST /write");
        assert_eq!(status, 204, "write failed: {body}");
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// Standard base64 with padding (for Basic credentials).
pub fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
