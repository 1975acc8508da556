//! `net_response` against real sockets on 127.0.0.1 made by the test: a TCP server that
//! answers a line, a closed port, a server that accepts but never answers, a UDP echo server
//! and a UDP port nobody listens on. Each probe goes through the real config loader.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use wk_agent::metric::{FieldValue, Metric};
use wk_agent::models::running_input::GlobalTags;

/// Loads `[[inputs.net_response]]` with `body` and gathers once; returns the one metric.
fn probe(body: &str) -> Metric {
    let mut plan = super::plan(&format!("[[inputs.net_response]]\n{body}\n"));
    assert_eq!(plan.inputs.len(), 1);
    let out = plan.inputs[0].gather(1, &GlobalTags::default());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.metrics.len(), 1, "{:?}", out.metrics);
    let m = out.metrics.into_iter().next().unwrap();
    assert_eq!(m.name, "net_response");
    m
}

/// Checks tags and fields common to every outcome; returns response_time if present.
fn check(m: &Metric, port: u16, proto: &str, result: &str, code: u64) -> Option<f64> {
    assert_eq!(m.tag("server"), Some("127.0.0.1"));
    assert_eq!(m.tag("port"), Some(port.to_string().as_str()));
    assert_eq!(m.tag("protocol"), Some(proto));
    assert_eq!(m.tag("result"), Some(result));
    assert_eq!(m.field("result_code"), Some(&FieldValue::Uint(code)));
    assert_eq!(
        m.field("result_type"),
        Some(&FieldValue::Str(result.to_owned()))
    );
    match m.field("response_time") {
        None => None,
        Some(FieldValue::Float(t)) => {
            assert!(*t >= 0.0 && *t < 5.0, "{t}");
            Some(*t)
        }
        other => panic!("response_time: {other:?}"),
    }
}

/// A TCP server on 127.0.0.1 that, for each of `conns` connections, reads one line and
/// answers `reply` followed by CRLF. Returns its port and the lines it received.
fn line_server(conns: usize, reply: &'static str) -> (u16, thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..conns {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            got.push(line);
            (&s).write_all(format!("{reply}\r\nsecond line\r\n").as_bytes())
                .unwrap();
        }
        got
    });
    (port, h)
}

#[test]
fn tcp_connect_only_is_success_with_time() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let m = probe(&format!(
        "protocol = \"tcp\"\naddress = \"127.0.0.1:{port}\""
    ));
    assert!(check(&m, port, "tcp", "success", 0).is_some());
    assert_eq!(m.field("string_found"), None);
    assert_eq!(m.fields.len(), 3);
    // The connection really reached the listener.
    l.set_nonblocking(true).unwrap();
    assert!(l.accept().is_ok());
}

#[test]
fn tcp_send_expect_match_and_mismatch() {
    let (port, h) = line_server(2, "+OK ready");
    let base = format!("protocol = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nsend = \"PING\\n\"");
    let m = probe(&format!("{base}\nexpect = \"OK ready\""));
    assert!(check(&m, port, "tcp", "success", 0).is_some());
    assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(true)));
    assert_eq!(m.fields.len(), 4);
    // Only the first line counts: "second" is in the answer, but not on line 1.
    let m = probe(&format!("{base}\nexpect = \"second\""));
    assert!(check(&m, port, "tcp", "string_mismatch", 4).is_some());
    assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(false)));
    assert_eq!(h.join().unwrap(), vec!["PING\n", "PING\n"]);
}

#[test]
fn tcp_closed_port_is_connection_failed() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let m = probe(&format!(
        "protocol = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nexpect = \"x\""
    ));
    assert_eq!(check(&m, port, "tcp", "connection_failed", 2), None);
    assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(false)));
}

#[test]
fn tcp_full_backlog_is_timeout() {
    // A listener whose accept queue is full: Linux drops further SYNs, so a connect hangs
    // until the probe's `timeout`.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // SAFETY: listen(2) on a descriptor the listener owns; re-listening only sets the backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                full = true;
                break;
            }
        }
    }
    assert!(
        full,
        "the accept queue never filled ({} connections)",
        held.len()
    );
    let port = addr.port();
    let t0 = Instant::now();
    let m = probe(&format!(
        "protocol = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"300ms\"\nsend = \"x\""
    ));
    let took = t0.elapsed();
    assert_eq!(check(&m, port, "tcp", "timeout", 1), None);
    assert_eq!(m.field("string_found"), None);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn tcp_unresolvable_host_is_connection_failed() {
    let m = probe("protocol = \"tcp\"\naddress = \"no-such-host.invalid:80\"");
    assert_eq!(m.tag("server"), Some("no-such-host.invalid"));
    assert_eq!(m.tag("result"), Some("connection_failed"));
    assert_eq!(m.field("response_time"), None);
}

#[test]
fn tcp_silent_server_is_read_failed_after_read_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // The kernel completes the handshake from the backlog; nobody ever writes.
    let t0 = Instant::now();
    let m = probe(&format!(
        "protocol = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nread_timeout = \"300ms\"\nexpect = \"hello\""
    ));
    let took = t0.elapsed();
    let rt = check(&m, port, "tcp", "read_failed", 3).expect("response_time");
    assert!(rt >= 0.29, "{rt}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(false)));
    drop(l);
}

/// A UDP server answering each datagram with `prefix` + the datagram.
fn udp_echo(prefix: &'static str) -> (u16, thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        let mut out = prefix.as_bytes().to_vec();
        out.extend_from_slice(&buf[..n]);
        s.send_to(&out, from).unwrap();
    });
    (port, h)
}

#[test]
fn udp_echo_match_and_mismatch() {
    for (expect, result, code, found) in [
        ("echo: hello", "success", 0, true),
        ("bye", "string_mismatch", 4, false),
    ] {
        let (port, h) = udp_echo("echo: ");
        let m = probe(&format!(
            "protocol = \"udp\"\naddress = \"127.0.0.1:{port}\"\nsend = \"hello\"\nexpect = \"{expect}\""
        ));
        assert!(check(&m, port, "udp", result, code).is_some(), "{expect}");
        assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(found)));
        h.join().unwrap();
    }
}

/// `localhost` may resolve to `::1` first while the server is bound to 127.0.0.1 only: the
/// port unreachable from `::1` sends the probe on to the next address (it stopped there,
/// read_failed).
#[test]
fn udp_goes_on_to_the_next_address_when_one_refuses() {
    let (port, h) = udp_echo("echo: ");
    use wk_agent::inputs::net_response::{Outcome, probe_udp_at, validate};
    let t = validate(
        Some("udp"),
        Some(&format!("localhost:{port}")),
        Duration::from_secs(1),
        Duration::from_secs(2),
        "hello",
        "echo: hello",
    )
    .unwrap();
    let addrs = vec![
        std::net::SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    ];
    let p = probe_udp_at(&t, addrs).unwrap();
    assert_eq!(p.outcome, Outcome::Success, "{p:?}");
    h.join().unwrap();
}

#[test]
fn udp_no_answer_is_read_failed_without_time() {
    // Closed port: ICMP port unreachable makes recv fail at once.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let conf = |port: u16| {
        format!(
            "protocol = \"udp\"\naddress = \"127.0.0.1:{port}\"\nsend = \"a\"\nexpect = \"b\"\nread_timeout = \"300ms\""
        )
    };
    let m = probe(&conf(port));
    assert_eq!(check(&m, port, "udp", "read_failed", 3), None);
    assert_eq!(m.field("string_found"), Some(&FieldValue::Bool(false)));
    // Open but silent: the read timeout.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let t0 = Instant::now();
    let m = probe(&conf(port));
    assert!(t0.elapsed() >= Duration::from_millis(290));
    assert_eq!(check(&m, port, "udp", "read_failed", 3), None);
    let mut buf = [0u8; 16];
    s.set_nonblocking(true).unwrap();
    assert_eq!(s.recv(&mut buf).unwrap(), 1, "the probe's datagram arrived");
}
