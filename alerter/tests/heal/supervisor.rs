//! A tiny init for one test service, which the test controls: it starts the service in its
//! own process group, reaps it when it dies (so a killed service is gone, not a zombie), and
//! answers a `ctl` script — the service's "systemctl" — on a Unix socket:
//! `ctl start|stop|restart|status` exits 0 with `ok …`, or 1 with the reason (for a start
//! that fails: the exit status and the service's last stderr lines, e.g. "Address already in
//! use"). A start succeeds only when the new process itself listens on the port (a squatter
//! listening there does not count).
//!
//! The supervisor never restarts on its own (systemd's `Restart=no`): bringing the service
//! back is the recovery action's job. Every `ctl` call is logged with its argv
//! ([`Supervisor::calls`]) so tests can check what exactly a recovery action ran.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::Spawned;
use super::{PYTHON, alive, listeners};
use crate::common::influxd::free_port;
use crate::common::wait::poll_until;

/// The ctl client: logs its argv, accepts one known command, relays the supervisor's answer.
const CTL: &str = r#"#!/usr/bin/python3
# Test service control (like systemctl): start | stop | restart | status.
import json, socket, sys
SOCK = __SOCK__
with open(__LOG__, 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + '\n')
if len(sys.argv) != 2 or sys.argv[1] not in ('start', 'stop', 'restart', 'status'):
    print('usage: ctl start|stop|restart|status', file=sys.stderr)
    sys.exit(2)
s = socket.socket(socket.AF_UNIX)
s.connect(SOCK)
s.sendall((sys.argv[1] + '\n').encode())
data = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
text = data.decode()
ok = text.startswith('ok')
(sys.stdout if ok else sys.stderr).write(text)
sys.exit(0 if ok else 1)
"#;

/// A server that accepts connections and never closes them (a deadlocked handler): after
/// the client closes, each socket stays in CLOSE_WAIT until the process exits.
pub const CLOSE_WAIT_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])
"#;

/// What the service is; its argv for a port.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `python3 -m http.server PORT --bind 127.0.0.1 --directory DIR/www`
    Web,
    /// [`CLOSE_WAIT_SERVER`]
    CloseWait,
}

struct State {
    current: Option<Spawned>,
    /// When each start request arrived.
    starts: Vec<Instant>,
    /// A broken service: every start fails (a config error that a restart cannot fix).
    broken: bool,
    /// Number of processes spawned (names their stderr files).
    spawned: usize,
}

struct Inner {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    state: Mutex<State>,
    stop: AtomicBool,
}

/// A supervised service on a free loopback port.
pub struct Supervisor {
    inner: Arc<Inner>,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Supervisor {
    /// `python3 -m http.server` under supervision (not started yet).
    pub fn web() -> Supervisor {
        Supervisor::new(Kind::Web)
    }

    /// The CLOSE_WAIT server under supervision (not started yet).
    pub fn close_wait() -> Supervisor {
        Supervisor::new(Kind::CloseWait)
    }

    fn new(kind: Kind) -> Supervisor {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("www")).unwrap();
        std::fs::write(d.join("www/index.html"), "watchkeeper test page\n").unwrap();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        let sock = d.join("ctl.sock");
        let script = CTL
            .replace("__SOCK__", &py_str(&sock))
            .replace("__LOG__", &py_str(&d.join("ctl-calls.jsonl")));
        let ctl = d.join("bin/ctl");
        std::fs::write(&ctl, script).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let listener = UnixListener::bind(&sock).expect("bind ctl.sock");
        let inner = Arc::new(Inner {
            kind,
            port: free_port(),
            dir: d.to_owned(),
            state: Mutex::new(State {
                current: None,
                starts: Vec::new(),
                broken: false,
                spawned: 0,
            }),
            stop: AtomicBool::new(false),
        });
        let me = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if me.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || serve(&me, conn));
            }
        });
        Supervisor {
            port: inner.port,
            inner,
            dir,
        }
    }

    /// The directory of the ctl script (an allowlist directory for `run_script`).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The ctl script's path.
    pub fn ctl(&self) -> PathBuf {
        self.bin_dir().join("ctl")
    }

    /// The temp dir (files the test may add next to the service's).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ctl CMD` as a recovery action would (a separate process); returns success and
    /// its output.
    pub fn ctl_run(&self, cmd: &str) -> (bool, String) {
        let out = Command::new(self.ctl())
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + String::from_utf8_lossy(&out.stderr).as_ref();
        (out.status.success(), text)
    }

    /// Starts the service directly (test set-up); panics unless it came up.
    pub fn start(&self) -> i32 {
        let reply = start(&self.inner);
        assert!(reply.starts_with("ok"), "service did not start: {reply}");
        self.pid().expect("running")
    }

    /// Fault injection: SIGKILL the service's process group and wait until it is reaped.
    pub fn kill(&self) {
        let current = self.inner.state.lock().unwrap().current.take();
        if let Some(p) = current {
            p.kill();
        }
    }

    /// The running service's pid (None when it is not running).
    pub fn pid(&self) -> Option<i32> {
        let mut st = self.inner.state.lock().unwrap();
        if st.current.as_ref().is_some_and(|p| p.exited().is_some()) {
            st.current = None;
        }
        st.current.as_ref().map(Spawned::pid)
    }

    /// Start requests received so far (`ctl start`/`restart` and [`Supervisor::start`]).
    pub fn starts(&self) -> usize {
        self.inner.state.lock().unwrap().starts.len()
    }

    /// When the last start request arrived.
    pub fn last_start(&self) -> Option<Instant> {
        self.inner.state.lock().unwrap().starts.last().copied()
    }

    /// Makes every later start fail (true) or work again (false).
    pub fn set_broken(&self, broken: bool) {
        self.inner.state.lock().unwrap().broken = broken;
    }

    /// The argv of every `ctl` call so far (without the program name).
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("ctl-calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("ctl log line"))
            .collect()
    }

    /// Whether `GET /` answers 200 within 2 s (the web service).
    pub fn answers_http(&self) -> bool {
        http_status(self.port, "/") == Some(200)
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees `stop`.
        let _ = UnixStream::connect(self.dir.path().join("ctl.sock"));
        self.kill();
    }
}

/// A Python string literal for a path.
fn py_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

fn serve(inner: &Inner, conn: UnixStream) {
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim() {
        "start" => start(inner),
        "stop" => stop(inner),
        "restart" => {
            stop(inner);
            start(inner)
        }
        "status" => match running(inner) {
            Some(pid) => format!("ok running pid {pid}\n"),
            None => "stopped\n".to_owned(),
        },
        other => format!("unknown command {other:?}\n"),
    };
    let mut conn = conn;
    let _ = conn.write_all(reply.as_bytes());
}

fn running(inner: &Inner) -> Option<i32> {
    let st = inner.state.lock().unwrap();
    st.current
        .as_ref()
        .filter(|p| p.exited().is_none())
        .map(Spawned::pid)
}

fn stop(inner: &Inner) -> String {
    let current = inner.state.lock().unwrap().current.take();
    match current {
        Some(p) => {
            p.signal(libc::SIGTERM);
            if p.wait_exit(Duration::from_secs(3)).is_none() {
                p.kill();
            }
            format!("ok stopped pid {}\n", p.pid())
        }
        None => "ok not running\n".to_owned(),
    }
}

fn start(inner: &Inner) -> String {
    let mut st = inner.state.lock().unwrap();
    st.starts.push(Instant::now());
    if let Some(p) = st.current.as_ref().filter(|p| p.exited().is_none()) {
        return format!("ok already running pid {}\n", p.pid());
    }
    st.spawned += 1;
    let err_path = inner.dir.join(format!("service-{}.err", st.spawned));
    let err = std::fs::File::create(&err_path).expect("service stderr");
    let port = inner.port.to_string();
    let mut cmd = Command::new(PYTHON);
    if st.broken {
        cmd.args(["-c", "import sys; sys.exit('cannot start: broken config')"]);
    } else {
        match inner.kind {
            Kind::Web => cmd
                .args([
                    "-m",
                    "http.server",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(inner.dir.join("www")),
            Kind::CloseWait => cmd.args(["-c", CLOSE_WAIT_SERVER, &port]),
        };
    }
    let p = Spawned::spawn(
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err),
        true,
    )
    .expect("spawn service");
    let pid = p.pid();
    // Up: this very process listens on the port. Down: it exited (report why).
    let up = poll_until(Duration::from_secs(5), || {
        p.exited().is_some() || listeners(inner.port).iter().any(|l| l.pid == pid)
    });
    if let Some(status) = p.exited() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return format!(
            "failed: pid {pid} exited with {status}\n{}\n",
            tail.join("\n")
        );
    }
    if !up || !alive(pid) {
        p.kill();
        return format!("failed: pid {pid} not listening on port {port} after 5 s\n");
    }
    st.current = Some(p);
    format!("ok started pid {pid}\n")
}

/// The status code of `GET path` on loopback `port`, or None when nothing answers in 2 s.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
