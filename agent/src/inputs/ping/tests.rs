use super::*;

const IPUTILS_OK: &str = "PING 127.0.0.1 (127.0.0.1) 16(44) bytes of data.
24 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.041 ms
24 bytes from 127.0.0.1: icmp_seq=2 ttl=63 time=0.052 ms
24 bytes from 127.0.0.1: icmp_seq=3 ttl=64 time=0.050 ms

--- 127.0.0.1 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 2040ms
rtt min/avg/max/mdev = 0.041/0.047/0.052/0.004 ms
";

const IPUTILS_LOSS: &str = "PING 192.0.2.1 (192.0.2.1) 16(44) bytes of data.

--- 192.0.2.1 ping statistics ---
2 packets transmitted, 0 received, 100% packet loss, time 1025ms

";

const IPUTILS_ERRORS: &str = "PING 10.0.0.99 (10.0.0.99) 16(44) bytes of data.
From 10.0.0.5 icmp_seq=1 Destination Host Unreachable
From 10.0.0.5 icmp_seq=2 Destination Host Unreachable

--- 10.0.0.99 ping statistics ---
3 packets transmitted, 0 received, +2 errors, 100% packet loss, time 2030ms
pipe 2
";

const IPUTILS_PARTIAL: &str = "PING 10.0.0.1 (10.0.0.1) 16(44) bytes of data.
24 bytes from 10.0.0.1: icmp_seq=2 ttl=255 time=1.53 ms

--- 10.0.0.1 ping statistics ---
2 packets transmitted, 1 received, 50% packet loss, time 1001ms
rtt min/avg/max/mdev = 1.530/1.530/1.530/0.000 ms
";

const IPUTILS_V6: &str = "PING ::1(::1) 16 data bytes
24 bytes from ::1: icmp_seq=1 ttl=64 time=0.030 ms

--- ::1 ping statistics ---
1 packets transmitted, 1 received, 0% packet loss, time 0ms
rtt min/avg/max/mdev = 0.030/0.030/0.030/0.000 ms
";

const IPUTILS_UNKNOWN: &str = "ping: nonexistent.invalid: Name or service not known\n";

const BUSYBOX_OK: &str = "PING 127.0.0.1 (127.0.0.1): 16 data bytes
24 bytes from 127.0.0.1: seq=0 ttl=64 time=0.072 ms
24 bytes from 127.0.0.1: seq=1 ttl=64 time=0.101 ms

--- 127.0.0.1 ping statistics ---
2 packets transmitted, 2 packets received, 0% packet loss
round-trip min/avg/max = 0.072/0.086/0.101 ms
";

const BUSYBOX_LOSS: &str = "PING 192.0.2.1 (192.0.2.1): 16 data bytes

--- 192.0.2.1 ping statistics ---
1 packets transmitted, 0 packets received, 100% packet loss
";

const BUSYBOX_UNKNOWN: &str = "ping: bad address 'nonexistent.invalid'\n";

const INETUTILS_OK: &str = "PING 127.0.0.1 (127.0.0.1): 16 data bytes
24 bytes from 127.0.0.1: icmp_seq=0 ttl=64 time=0.050 ms
--- 127.0.0.1 ping statistics ---
1 packets transmitted, 1 packets received, 0% packet loss
round-trip min/avg/max/stddev = 0.050/0.050/0.050/0.000 ms
";

const INETUTILS_UNKNOWN: &str = "ping: unknown host\n";

const BSD_V6: &str = "PING6(64=40+8+16 bytes) ::1 --> ::1
24 bytes from ::1, icmp_seq=0 hlim=64 time=0.071 ms

--- ::1 ping6 statistics ---
1 packets transmitted, 1 packets received, 0.0% packet loss
round-trip min/avg/max/std-dev = 0.071/0.071/0.071/0.000 ms
";

/// The summary and round-trip line of every flavour: packets transmitted and received, the
/// first reply's ttl, the rtt line (absent without replies).
#[test]
fn summaries_of_every_ping_flavour() {
    let rtt = |min, avg, max, stddev| {
        Some(Rtt {
            min,
            avg,
            max,
            stddev,
        })
    };
    for (name, text, counts, want_rtt) in [
        (
            "iputils",
            IPUTILS_OK,
            (3, 3, Some(64)),
            rtt(0.041, 0.047, 0.052, Some(0.004)),
        ),
        ("iputils total loss", IPUTILS_LOSS, (2, 0, None), None),
        ("iputils errors", IPUTILS_ERRORS, (3, 0, None), None),
        (
            "iputils partial",
            IPUTILS_PARTIAL,
            (2, 1, Some(255)),
            rtt(1.53, 1.53, 1.53, Some(0.0)),
        ),
        (
            "iputils v6",
            IPUTILS_V6,
            (1, 1, Some(64)),
            rtt(0.03, 0.03, 0.03, Some(0.0)),
        ),
        (
            "busybox",
            BUSYBOX_OK,
            (2, 2, Some(64)),
            rtt(0.072, 0.086, 0.101, None),
        ),
        ("busybox loss", BUSYBOX_LOSS, (1, 0, None), None),
        (
            "inetutils",
            INETUTILS_OK,
            (1, 1, Some(64)),
            rtt(0.05, 0.05, 0.05, Some(0.0)),
        ),
        (
            "bsd v6",
            BSD_V6,
            (1, 1, Some(64)),
            rtt(0.071, 0.071, 0.071, Some(0.0)),
        ),
    ] {
        let s = parse_ping_output(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!((s.transmitted, s.received, s.ttl), counts, "{name}");
        assert_eq!(s.rtt, want_rtt, "{name}");
    }
}

#[test]
fn unknown_host_outputs_have_no_statistics() {
    for text in [IPUTILS_UNKNOWN, BUSYBOX_UNKNOWN, INETUTILS_UNKNOWN, ""] {
        let e = parse_ping_output(text).unwrap_err();
        assert!(e.1.contains("packets transmitted"), "{e:?}");
    }
}

#[test]
fn garbage_names_the_line() {
    let e = parse_ping_output("PING x\nmany packets transmitted, none received\n").unwrap_err();
    assert_eq!(e.0, 2);
    let e =
        parse_ping_output("1 packets transmitted, 1 received\nrtt min/avg/max/mdev = a/b/c/d ms\n")
            .unwrap_err();
    assert_eq!(e.0, 2);
    let e = parse_ping_output("1 packets transmitted, 1 received\nrtt min/avg/max/mdev 1/2/3\n")
        .unwrap_err();
    assert_eq!(e.0, 2);
    // A truncated statistics line.
    let e = parse_ping_output("3 packets transmitted,received\n").unwrap_err();
    assert_eq!(e.0, 1);
}

fn args() -> ExecArgs {
    ExecArgs {
        count: 1,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
        interface: None,
        ipv4: false,
        ipv6: false,
        arguments: vec![],
    }
}

#[test]
fn telegraf_linux_argv() {
    assert_eq!(
        args().argv("example.org"),
        [
            "-c",
            "1",
            "-n",
            "-s",
            "16",
            "-i",
            "1",
            "-W",
            "1",
            "-w",
            "10",
            "example.org"
        ]
    );
    let a = ExecArgs {
        count: 5,
        interval: Duration::from_millis(200),
        timeout: Duration::ZERO,
        deadline: Duration::ZERO,
        interface: Some("eth0".into()),
        ipv6: true,
        ..args()
    };
    assert_eq!(
        a.argv("::1"),
        [
            "-c", "5", "-n", "-s", "16", "-i", "0.2", "-I", "eth0", "-6", "::1"
        ]
    );
    let a = ExecArgs {
        timeout: Duration::from_millis(1500),
        ipv4: true,
        ..args()
    };
    assert_eq!(a.argv("h")[7..], ["-W", "1.5", "-w", "10", "-4", "h"]);
    let a = ExecArgs {
        arguments: vec!["-c".into(), "3".into()],
        ..args()
    };
    assert_eq!(a.argv("h"), ["-c", "3", "h"]);
    // Telegraf truncates the deadline to whole seconds (int(seconds)), 0.5 s included.
    for (ms, w) in [(1500, "1"), (500, "0")] {
        let a = ExecArgs {
            deadline: Duration::from_millis(ms),
            ..args()
        };
        assert_eq!(a.argv("h")[9..11], ["-w", w]);
    }
}

fn exited(code: i32, stdout: &str) -> Run {
    Run::Exited {
        code,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

#[test]
fn result_codes() {
    let o = outcome("h", exited(0, IPUTILS_OK));
    assert_eq!((o.result_code, o.parse_failed, o.error), (0, false, None));
    assert_eq!(o.stats.unwrap().received, 3);
    // iputils exits 1 when no reply came: the output is still parsed.
    let o = outcome("h", exited(1, IPUTILS_LOSS));
    assert_eq!(o.result_code, 1);
    assert_eq!(o.stats.unwrap().transmitted, 2);
    // iputils exits 2 on an unknown host: only result_code, and an error.
    let o = outcome("h", exited(2, IPUTILS_UNKNOWN));
    assert_eq!((o.result_code, o.stats), (2, None));
    assert!(o.error.unwrap().contains("Name or service not known"));
    let o = outcome("h", Run::Failed("cannot run \"ping\"".into()));
    assert_eq!((o.result_code, o.stats), (2, None));
    // busybox exits 1 on a bad address: Telegraf's parse failure, errors = 100.
    let o = outcome("h", exited(1, BUSYBOX_UNKNOWN));
    assert_eq!((o.result_code, o.parse_failed), (1, true));
}

#[test]
fn fields_on_total_loss_and_hard_failure() {
    let acc = Accumulator::new(0);
    let o = outcome("h", exited(1, IPUTILS_LOSS));
    let m = metric(&acc, "h", &o);
    let keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(
        keys,
        [
            "result_code",
            "packets_transmitted",
            "packets_received",
            "percent_packet_loss"
        ]
    );
    assert_eq!(m.field("percent_packet_loss"), Some(&100.0.into()));
    assert_eq!(m.field("result_code"), Some(&1i64.into()));
    assert_eq!(m.tag("url"), Some("h"));

    let o = outcome("h", exited(2, IPUTILS_UNKNOWN));
    let m = metric(&acc, "h", &o);
    assert_eq!(m.fields.len(), 1);
    assert_eq!(m.field("result_code"), Some(&2i64.into()));

    let o = outcome("h", exited(0, IPUTILS_PARTIAL));
    let m = metric(&acc, "h", &o);
    assert_eq!(m.field("percent_packet_loss"), Some(&50.0.into()));
    assert_eq!(m.field("ttl"), Some(&255i64.into()));
    assert_eq!(m.field("standard_deviation_ms"), Some(&0.0.into()));
    assert_eq!(m.fields.len(), 9);
}
