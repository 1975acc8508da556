//! `docker` against recorded Docker Engine API answers: a unix-socket server run by the test
//! serves the JSON of `agent/src/inputs/docker/testdata/<case>/data/` (Telegraf's own
//! recordings: `info.json`, `list.json`, `inspect_<id>.json`, `stats_<id>.json`), and the
//! gathered lines must equal the case's `expected.out`. For Telegraf's cases that file is
//! Telegraf's own, so timestamps and `uptime_ns` (time-dependent) are left out of the
//! comparison, as Telegraf's test does; tags, field names, values and types must match.
//! `WK_BLESS=1` rewrites the expected.out of our own cases (those with an `ours` file).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wk_agent::lineproto::test_format;

/// A fake Docker daemon on a unix socket; the paths it was asked for are kept.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
}

fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

impl FakeDaemon {
    fn start(data: &Path) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (data, seen) = (data.to_owned(), requests.clone());
        // The thread ends with the test binary; each answer is on its own connection.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let head = read_head(&mut conn);
                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push(target.clone());
                let path = target.split('?').next().unwrap_or("");
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                let file = match parts.as_slice() {
                    ["info"] => Some("info.json".to_owned()),
                    ["containers", "json"] => Some("list.json".to_owned()),
                    ["containers", id, "json"] => Some(format!("inspect_{id}.json")),
                    ["containers", id, "stats"] => Some(format!("stats_{id}.json")),
                    _ => None,
                };
                let body = file.and_then(|f| std::fs::read(data.join(f)).ok());
                let answer = match body {
                    // Stats answers are chunked as the daemon sends them; the rest sized.
                    Some(b) if path.ends_with("/stats") => {
                        let mut a = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                        for chunk in b.chunks(700) {
                            a.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                            a.extend_from_slice(chunk);
                            a.extend_from_slice(b"\r\n");
                        }
                        a.extend_from_slice(b"0\r\n\r\n");
                        a
                    }
                    Some(b) => {
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(&b);
                        a
                    }
                    None => {
                        let msg = format!("{{\"message\":\"page not found: {path}\"}}");
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{msg}",
                            msg.len()
                        )
                        .into_bytes()
                    }
                };
                let _ = conn.write_all(&answer);
            }
        });
        FakeDaemon {
            _dir: dir,
            socket,
            requests,
        }
    }
}

/// Gathers once with `conf` (an `[[inputs.docker]]` table) pointed at the daemon.
fn gather(daemon: &FakeDaemon, conf: &str) -> (Vec<String>, Vec<String>) {
    let conf = format!(
        "{}\n  endpoint = \"unix://{}\"\n",
        conf.trim_end(),
        daemon.socket.display()
    );
    let (metrics, errors) = crate::live::gather_with_errors(&conf);
    (metrics.iter().map(test_format).collect(), errors)
}

/// A line without its timestamp and `uptime_ns`, fields sorted; `> ` dropped.
fn normalize(line: &str) -> String {
    let line = line.trim().trim_start_matches("> ");
    // Split on spaces outside quotes and not escaped: series, fields, timestamp.
    let (mut parts, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                cur.push(c);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let series = parts.first().cloned().unwrap_or_default();
    let mut fields: Vec<&str> = parts
        .get(1)
        .map(|f| f.split(',').collect())
        .unwrap_or_default();
    fields.retain(|f| !f.starts_with("uptime_ns="));
    fields.sort();
    format!("{series} {}", fields.join(","))
}

fn sorted(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| normalize(&l))
        .collect();
    v.sort();
    v
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/inputs/docker/testdata");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("data").is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn recorded_api_answers_give_telegrafs_lines() {
    let bless = std::env::var_os("WK_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 4, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let daemon = FakeDaemon::start(&case.join("data"));
        let conf = std::fs::read_to_string(case.join("telegraf.conf")).unwrap();
        let (got, errors) = gather(&daemon, &conf);
        assert!(errors.is_empty(), "{}: {errors:?}", case.display());
        let expected_path = case.join("expected.out");
        if bless && case.join("ours").exists() {
            std::fs::write(&expected_path, got.concat()).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap();
        let (want, got) = (sorted(want.lines().map(str::to_owned)), sorted(got));
        if want != got {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                case.display(),
                want.join("\n"),
                got.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn requests_ask_for_all_containers_and_one_stats_sample() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/inputs/docker/testdata/include_non_running");
    let daemon = FakeDaemon::start(&case.join("data"));
    let (_, errors) = gather(
        &daemon,
        "[[inputs.docker]]\n  container_state_include = [\"exited\"]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let seen = daemon.requests.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "/info",
            "/containers/json?all=1",
            "/containers/123456789/json",
            "/containers/123456789/stats?stream=false"
        ]
    );
}

#[test]
fn name_filter_and_unknown_container_errors() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/inputs/docker/testdata/telegraf_testdata/data");
    let daemon = FakeDaemon::start(&data);
    let (lines, errors) = gather(
        &daemon,
        "[[inputs.docker]]\n  container_name_include = [\"etcd*\"]\n  container_name_exclude = [\"etcd2\"]\n  total_include = []\n  perdevice_include = []\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let names: std::collections::BTreeSet<String> = lines
        .iter()
        .filter_map(|l| {
            let t = l.split("container_name=").nth(1)?;
            Some(t.split([',', ' ']).next()?.to_owned())
        })
        .collect();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["etcd"]);

    // A daemon without the container's answers: the error names it, the engine lines stay.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(data.join("info.json"), empty.path().join("info.json")).unwrap();
    std::fs::copy(data.join("list.json"), empty.path().join("list.json")).unwrap();
    let daemon = FakeDaemon::start(empty.path());
    let (lines, errors) = gather(
        &daemon,
        "[[inputs.docker]]\n  container_name_include = [\"etcd\"]\n",
    );
    assert!(
        lines.iter().any(|l| l.starts_with("> docker,")),
        "{lines:?}"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("inspecting container failed") && errors[0].contains("status 404"),
        "{errors:?}"
    );
}

#[test]
fn no_daemon_is_an_error_naming_the_socket() {
    let (metrics, errors) = crate::live::gather_with_errors(
        "[[inputs.docker]]\n  endpoint = \"unix:///nonexistent/docker.sock\"\n",
    );
    assert!(metrics.is_empty());
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unix:///nonexistent/docker.sock")),
        "{errors:?}"
    );
}
