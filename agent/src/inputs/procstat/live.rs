//! `procstat` on real processes: a server the test starts that accepts TCP connections and
//! never closes them, so each closed client leaves a CLOSE_WAIT socket on its side. Checked
//! against /proc itself (pid, VmRSS, threads) and against `ss` (CLOSE_WAIT owned by the pid).

use std::io::BufRead;
use std::net::TcpStream;
use std::process::{Command, Stdio};

use super::{float, int, uint};
use wk_agent::metric::Metric;
use wk_agent::models::running_input::GlobalTags;
use wk_core::testing::KillOnDrop;

struct Server(KillOnDrop, u16);

/// A python3 server holding every accepted connection open forever; `tag` makes its command
/// line unique so the pattern selects only it.
fn close_wait_server(tag: &str) -> Server {
    let code = format!(
        "import socket,sys\n# {tag}\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(64)\n\
         print(s.getsockname()[1], flush=True)\nkeep=[]\nwhile True:\n    keep.append(s.accept()[0])\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &code])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap();
    Server(KillOnDrop(child), port)
}

fn gather(conf: &str) -> Vec<Metric> {
    let mut plan = super::plan(conf);
    let global = GlobalTags::default();
    let _ = plan.inputs[0].gather(0, &global);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = plan.inputs[0].gather(1_000_000_000, &global);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.metrics
}

/// CLOSE_WAIT sockets `ss` attributes to `pid`.
fn ss_close_wait(pid: u32) -> i64 {
    let out = Command::new("ss")
        .args(["-tanp", "state", "close-wait"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .count() as i64
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn procstat_sees_the_process_and_its_close_wait_sockets() {
    let tag = format!("wk-procstat-live-{}", std::process::id());
    let server = close_wait_server(&tag);
    let pid = server.0.id();
    for _ in 0..5 {
        drop(TcpStream::connect(("127.0.0.1", server.1)).unwrap());
    }
    // The server accepted them (its accept loop) and never closes: 5 CLOSE_WAIT.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ss_close_wait(pid) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never reached 5 CLOSE_WAIT"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let metrics = gather(&format!(
        "[[inputs.procstat]]\n  pattern = \"{tag}\"\n  properties = [\"cpu\", \"memory\", \"mmap\"]\n"
    ));
    let p = metrics
        .iter()
        .find(|m| m.name == "procstat")
        .expect("a procstat line");
    assert_eq!(int(p, "pid"), i64::from(pid));
    assert_eq!(p.tag("process_name"), Some("python3"));
    assert_eq!(p.tag("pattern"), Some(tag.as_str()));
    assert_eq!(int(p, "num_threads"), 1);
    assert!(int(p, "num_fds") >= 8, "listener + 5 accepted + stdio");
    // RSS moves a little between the two readings; VmRSS is in kB.
    let rss = uint(p, "memory_rss") as f64 / 1024.0;
    let vm_rss = status_kb(pid, "VmRSS:") as f64;
    assert!(
        (rss - vm_rss).abs() / vm_rss < 0.2,
        "memory_rss {rss} kB vs VmRSS {vm_rss} kB"
    );
    assert!(
        float(p, "cpu_usage") >= 0.0,
        "cpu_usage from the second gather"
    );

    let tcp = metrics
        .iter()
        .find(|m| m.name == "procstat_tcp")
        .expect("a procstat_tcp line");
    assert_eq!(tcp.tag("pid"), Some(pid.to_string().as_str()));
    assert_eq!(
        int(tcp, "tcp_close_wait"),
        ss_close_wait(pid),
        "ss -tanp state close-wait"
    );
    assert_eq!(int(tcp, "tcp_close_wait"), 5);
    assert_eq!(int(tcp, "tcp_listen"), 1);

    let lookup = metrics
        .iter()
        .find(|m| m.name == "procstat_lookup")
        .unwrap();
    assert_eq!(
        (
            int(lookup, "pid_count"),
            int(lookup, "running"),
            int(lookup, "result_code")
        ),
        (1, 1, 0)
    );
}

#[test]
fn a_missing_pid_file_is_a_lookup_error() {
    let mut plan = super::plan("[[inputs.procstat]]\n  pid_file = \"/nonexistent/wk-test.pid\"\n");
    let out = plan.inputs[0].gather(0, &GlobalTags::default());
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    let lookup = &out.metrics[0];
    assert_eq!(lookup.tag("result"), Some("lookup_error"));
    assert_eq!(int(lookup, "result_code"), 1);
}

/// procstat_tcp from the map kept between gathers equals a map read afresh (and `ss`) after
/// the process gains sockets, without reading its fds in full again.
#[test]
fn the_kept_socket_map_follows_new_sockets() {
    use wk_agent::inputs::procstat::TcpOwners;
    let tag = format!("wk-procstat-kept-{}", std::process::id());
    let server = close_wait_server(&tag);
    let pid = server.0.id();
    let settle = |cw: i64, accepted: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .count();
            // stdio, the listener and the accepted sockets.
            if ss_close_wait(pid) == cw && fds >= 4 + accepted {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never settled");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    for _ in 0..3 {
        drop(TcpStream::connect(("127.0.0.1", server.1)).unwrap());
    }
    settle(3, 3);
    let proc_root = std::path::Path::new("/proc");
    let mut kept = TcpOwners::new(proc_root, std::time::Duration::from_secs(3600));
    let mut fresh = TcpOwners::new(proc_root, std::time::Duration::ZERO);
    let pids = [pid as i32];
    let k = kept.states(&pids).unwrap();
    assert_eq!(k.counts[&(pid as i32)][7], 3, "tcp_close_wait");
    let full = kept.map_stats().full_reads;

    // Two more connections left open (ESTABLISHED on the server side) and two closed.
    let open: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", server.1)).unwrap())
        .collect();
    for _ in 0..2 {
        drop(TcpStream::connect(("127.0.0.1", server.1)).unwrap());
    }
    settle(5, 7);
    let k = kept.states(&pids).unwrap();
    let f = fresh.states(&pids).unwrap();
    assert_eq!(k.counts, f.counts, "kept vs fresh");
    let c = k.counts[&(pid as i32)];
    assert_eq!(
        (c[0], c[7], c[9]),
        (2, 5, 1),
        "established, close_wait, listen"
    );
    assert_eq!(c[7] as i64, ss_close_wait(pid), "ss -tanp state close-wait");
    assert_eq!(
        kept.map_stats().full_reads,
        full,
        "found without reading the process in full"
    );
    drop(open);
}
