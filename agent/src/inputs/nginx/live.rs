//! `nginx` against a real nginx (Debian package `nginx`) started by the test: `nginx -c cfg -g
//! 'daemon off;'` with its pid, logs and temp paths in a temp dir, on a free loopback port,
//! with a `stub_status` location. The oracle is the number of requests the test made (plus
//! the status request itself) and nginx's own stub_status page read raw.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::uint;
use crate::outputs::servers::start_server;
use wk_core::testing::KillOnDrop;
use wk_core::testing::{binary, free_port};

/// A running nginx, killed on drop. `master_process off` keeps it one process: killing a
/// master would leave its workers running.
struct Nginx {
    /// First, so that nginx is killed before its directory is removed.
    _child: KillOnDrop,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// `None` only when WK_SKIP_SERVERS=1 and nginx is missing.
    fn start() -> Option<Nginx> {
        let bin = binary("nginx", "nginx")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let cfg = format!(
            "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location = /status {{ stub_status; }}\n\
                 location = /missing {{ return 404; }}\n\
                 location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        let cfg_path = dir.path().join("nginx.conf");
        std::fs::write(&cfg_path, cfg).unwrap();
        // One log for everything: startup errors (-e), the error_log, stdout and stderr.
        let log = dir.path().join("nginx.log");
        // Ready when the status page answers: exactly one connection and one request are
        // counted before the test's own (failed connects are not).
        let child = start_server(
            Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(&log)
                .arg("-c")
                .arg(&cfg_path)
                .args(["-g", "daemon off;"]),
            &log,
            || try_get(port, "/status").is_some_and(|p| p.contains("Active connections")),
        );
        Some(Nginx {
            _child: child,
            dir,
            port,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx.log")).unwrap_or_default()
    }
}

/// One GET on its own connection; returns the whole answer, `None` when nothing listens.
fn try_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

fn get(port: u16, path: &str) -> String {
    try_get(port, path).expect("nginx answers")
}

use super::gather_with_errors as gather;

/// The counters of nginx's own page: `requests` on the third line.
fn raw_requests(port: u16) -> u64 {
    let page = get(port, "/status");
    let body = page.split("\r\n\r\n").nth(1).expect("a body");
    body.lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn stub_status_counts_the_requests_the_test_made() {
    let Some(n) = Nginx::start() else {
        return;
    };
    const N: u64 = 9;
    for _ in 0..N {
        assert!(get(n.port, "/").starts_with("HTTP/1.1 200"));
    }
    let conf = format!(
        "[[inputs.nginx]]\n  urls = [\"http://127.0.0.1:{}/status\"]\n  response_timeout = \"5s\"\n",
        n.port
    );
    let (ms, errors) = gather(&conf);
    assert!(errors.is_empty(), "{errors:?}\n{}", n.log());
    assert_eq!(ms.len(), 1, "{ms:?}");
    let m = &ms[0];
    assert_eq!(m.name, "nginx");
    assert_eq!(m.tag("server"), Some("127.0.0.1"));
    assert_eq!(m.tag("port"), Some(n.port.to_string().as_str()));
    // The start-up probe, N requests (each on its own connection), then the status request.
    assert_eq!(uint(m, "requests"), N + 2);
    assert_eq!(uint(m, "accepts"), N + 2);
    assert_eq!(uint(m, "handled"), N + 2);
    // Only the status request's connection is open, and it is being written to.
    assert_eq!(uint(m, "active"), 1);
    assert_eq!(uint(m, "writing"), 1);
    assert_eq!(uint(m, "reading"), 0);
    assert_eq!(uint(m, "waiting"), 0);
    // nginx's own page, read next, has counted one request more.
    assert_eq!(raw_requests(n.port), N + 3);
}

#[test]
fn missing_and_foreign_pages_are_errors() {
    let Some(n) = Nginx::start() else {
        return;
    };
    let conf = format!(
        "[[inputs.nginx]]\n  urls = [\"http://127.0.0.1:{p}/missing\", \"http://127.0.0.1:{p}/\"]\n",
        p = n.port
    );
    let (ms, errors) = gather(&conf);
    assert!(ms.is_empty(), "{ms:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].ends_with("/missing returned HTTP status 404 Not Found"),
        "{}",
        errors[0]
    );
    // `location /` answers 200 "ok": not a stub_status page.
    assert!(errors[1].contains("Active connections"), "{}", errors[1]);
}
