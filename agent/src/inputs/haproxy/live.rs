//! `haproxy` against a real HAProxy (Debian package `haproxy`) started by the test: `haproxy -f
//! cfg -db` with a stats socket in a temp dir, a stats page on a free loopback port behind
//! Basic auth, and a frontend whose backend is a tiny HTTP server run here. The oracle is
//! HAProxy's own `show stat` (read raw by the test) and the number of requests the test sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::uint;
use crate::outputs::servers::start_server;
use wk_agent::metric::{FieldValue, Metric};
use wk_core::testing::KillOnDrop;
use wk_core::testing::{binary, free_ports};

/// A running HAProxy, killed on drop.
struct Haproxy {
    /// First, so that HAProxy is killed before its directory is removed.
    _child: KillOnDrop,
    dir: tempfile::TempDir,
    /// The frontend the test sends requests to.
    web_port: u16,
    stats_port: u16,
    /// The stats socket on TCP (`tcp://` servers).
    tcp_port: u16,
}

impl Haproxy {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Starts HAProxy in front of `app_port`; `None` only when WK_SKIP_SERVERS=1 and haproxy
    /// is missing.
    fn start(app_port: u16) -> Option<Haproxy> {
        let bin = binary("haproxy", "haproxy")?;
        let dir = tempfile::tempdir().unwrap();
        let [web_port, stats_port, tcp_port] = free_ports::<3>();
        let sock = dir.path().join("admin.sock");
        let cfg = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  stats socket ipv4@127.0.0.1:{tcp_port} level admin\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\
             frontend web\n  bind 127.0.0.1:{web_port}\n  default_backend app\n\
             frontend stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /haproxy?stats\n  stats auth wk:s3cret\n\
             backend app\n  server s1 127.0.0.1:{app_port} check inter 200ms\n",
            sock = sock.display()
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        // Ready when the socket answers (every listener is bound by then) and the health
        // check has marked s1 UP. No probe of the frontend: it would count as a request.
        let child = start_server(
            Command::new(bin).arg("-f").arg(&cfg_path).arg("-db"),
            &dir.path().join("haproxy.log"),
            || {
                show_stat(&sock).is_ok_and(|text| {
                    raw_row(&text, "app", "s1").is_some_and(|r| r["status"] == "UP")
                })
            },
        );
        Some(Haproxy {
            _child: child,
            dir,
            web_port,
            stats_port,
            tcp_port,
        })
    }
}

/// HAProxy's own answer to `show stat`.
fn show_stat(sock: &Path) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"show stat\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// One row of raw `show stat` CSV as column → value (no quoting in these rows).
fn raw_row(
    text: &str,
    pxname: &str,
    svname: &str,
) -> Option<std::collections::HashMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.strip_prefix("# ")?.split(',').collect();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|cols| cols.len() > 1 && cols[0] == pxname && cols[1] == svname)
        .map(|cols| {
            header
                .iter()
                .zip(cols)
                .map(|(h, v)| (h.to_string(), v.to_owned()))
                .collect()
        })
}

/// The app behind HAProxy: answers every request `200 ok`, forever (the thread ends with the
/// test process).
fn app() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                // Health checks connect and close without a request.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

/// One request through the frontend; returns the status line.
fn request(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_owned()
}

use super::gather_with_errors as gather;

fn find<'a>(ms: &'a [Metric], server: &str, proxy: &str, sv: &str) -> &'a Metric {
    ms.iter()
        .find(|m| {
            m.tag("server") == Some(server)
                && m.tag("proxy") == Some(proxy)
                && m.tag("sv") == Some(sv)
        })
        .unwrap_or_else(|| panic!("no haproxy line for {server} {proxy}/{sv} in {ms:#?}"))
}

fn string(m: &Metric, key: &str) -> String {
    match m.field(key) {
        Some(FieldValue::Str(v)) => v.clone(),
        other => panic!("{key}: expected a string, got {other:?} in {m:?}"),
    }
}

#[test]
fn socket_and_http_stats_match_haproxys_show_stat_after_n_requests() {
    let app_port = app();
    let Some(h) = Haproxy::start(app_port) else {
        return;
    };
    const N: u64 = 7;
    for _ in 0..N {
        assert!(request(h.web_port).contains("200"));
    }
    // HAProxy adds a request's bytes to the server's counters when its stream ends, which can
    // be just after the client has the response: wait until they stop moving (two reads
    // 100 ms apart agree), so the gather and the raw read below see the same counts.
    let counters = || {
        let raw = show_stat(&h.socket()).unwrap();
        let row = raw_row(&raw, "app", "s1").unwrap();
        (row["bin"].clone(), row["bout"].clone())
    };
    let mut last = counters();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = counters();
        if now == last {
            break;
        }
        last = now;
    }
    let sock = h.socket().display().to_string();
    // The socket by glob, the stats page with credentials in the URL, the TCP socket.
    let conf = format!(
        "[[inputs.haproxy]]\n  servers = [\"{}/*.sock\", \"http://wk:s3cret@127.0.0.1:{}/haproxy?stats\", \"tcp://127.0.0.1:{}\"]\n",
        h.dir.path().display(),
        h.stats_port,
        h.tcp_port
    );
    let (ms, errors) = gather(&conf);
    assert!(errors.is_empty(), "{errors:?}");
    let raw = show_stat(&h.socket()).unwrap();
    let http_server = format!("127.0.0.1:{}", h.stats_port);
    let tcp_server = format!("127.0.0.1:{}", h.tcp_port);
    for server in [sock.as_str(), http_server.as_str(), tcp_server.as_str()] {
        let s1 = find(&ms, server, "app", "s1");
        assert_eq!(s1.tag("type"), Some("server"));
        assert_eq!(uint(s1, "stot"), N, "sessions through app/s1: {s1:?}");
        assert_eq!(uint(s1, "http_response.2xx"), N);
        assert_eq!(string(s1, "status"), "UP");
        assert_eq!(string(s1, "mode"), "http");
        assert_eq!(string(s1, "check_status"), "L4OK");
        // HAProxy shows server addresses on admin sockets only, not on the stats page.
        if server != http_server {
            assert_eq!(string(s1, "addr"), format!("127.0.0.1:{app_port}"));
        } else {
            assert!(s1.field("addr").is_none());
        }
        assert!(s1.field("check_desc").is_none());
        // Every numeric column of HAProxy's own row that does not move between the two
        // reads is the same uint here.
        let want = raw_row(&raw, "app", "s1").unwrap();
        for col in [
            "stot", "bin", "bout", "lbtot", "weight", "act", "bck", "sid", "iid",
        ] {
            let name = match col {
                "act" => "active_servers",
                "bck" => "backup_servers",
                c => c,
            };
            assert_eq!(
                uint(s1, name).to_string(),
                want[col],
                "{col} of app/s1 via {server}"
            );
        }
        let be = find(&ms, server, "app", "BACKEND");
        assert_eq!(be.tag("type"), Some("backend"));
        assert_eq!(uint(be, "stot"), N);
        let fe = find(&ms, server, "web", "FRONTEND");
        assert_eq!(fe.tag("type"), Some("frontend"));
        assert_eq!(uint(fe, "req_tot"), N);
        assert_eq!(string(fe, "status"), "OPEN");
    }
    // keep_field_names: HAProxy's column names, tags pxname/svname.
    let conf =
        format!("[[inputs.haproxy]]\n  servers = [\"socket:{sock}\"]\n  keep_field_names = true\n");
    let (ms, errors) = gather(&conf);
    assert!(errors.is_empty(), "{errors:?}");
    let s1 = ms
        .iter()
        .find(|m| m.tag("pxname") == Some("app") && m.tag("svname") == Some("s1"))
        .expect("app/s1 with keep_field_names");
    assert_eq!(uint(s1, "hrsp_2xx"), N);
    assert_eq!(uint(s1, "act"), 1);
    assert!(s1.field("active_servers").is_none());
}

#[test]
fn wrong_credentials_and_missing_socket_are_errors() {
    let Some(h) = Haproxy::start(app()) else {
        return;
    };
    let conf = format!(
        "[[inputs.haproxy]]\n  servers = [\"http://127.0.0.1:{}/haproxy?stats\", \"{}/none.sock\"]\n  username = \"wk\"\n  password = \"wrong\"\n",
        h.stats_port,
        h.dir.path().display()
    );
    let (ms, errors) = gather(&conf);
    assert!(ms.is_empty(), "{ms:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("http response code : 401"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("could not connect to 'unix://"),
        "{}",
        errors[1]
    );
}
