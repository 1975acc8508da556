//! `netstat` on this host. The test makes its own sockets on 127.0.0.1 (LISTEN, two
//! SO_REUSEPORT listeners on one port, ESTABLISHED, TIME_WAIT, CLOSE_WAIT/FIN_WAIT2) and checks,
//! restricted to its own ports so that other processes cannot disturb the result:
//! - the netlink walk and the /proc/net/tcp walk see exactly the sockets it made;
//! - `ss` (iproute2) and, when installed, net-tools `netstat` report the same states.
//!
//! Host-wide it checks that netlink and /proc give identical counts, and that the input's
//! fields equal an independent recount (de-duplicated in the test) of one netlink walk. Every
//! host-wide comparison is retried until two netlink reads around it agree (other processes
//! open and close sockets), and fails if that never happens.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use wk_agent::hostpaths::HostPaths;
use wk_agent::inputs::netstat::netlink::InetSock;
use wk_agent::inputs::netstat::{
    Counter, Counts, Source, TCP_FIELDS, UnixCounting, parse_inet_table, parse_unix,
};
use wk_agent::metric::FieldValue;
use wk_agent::models::running_input::GlobalTags;

const STATE_NAMES: [&str; 12] = [
    "",
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
];

/// A TCP or UDP socket on 127.0.0.1:`port` (0 = any) with SO_REUSEPORT, listening for TCP.
fn reuseport(tcp: bool, port: u16) -> (OwnedFd, u16) {
    let ty = if tcp {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain libc calls on a descriptor we own; every result is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            4,
        );
        assert_eq!(rc, 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            len,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        if tcp {
            assert_eq!(libc::listen(fd.as_raw_fd(), 16), 0);
        }
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut glen = len;
        let rc = libc::getsockname(
            fd.as_raw_fd(),
            (&mut got as *mut libc::sockaddr_in).cast(),
            &mut glen,
        );
        assert_eq!(rc, 0);
        (fd, u16::from_be(got.sin_port))
    }
}

/// Raw (not de-duplicated) TCP sockets touching one of `ports`, as state → count.
fn own_states(socks: &[InetSock], ports: &[u16]) -> BTreeMap<u8, u64> {
    let mut out = BTreeMap::new();
    for s in socks {
        if ports.contains(&s.sport) || ports.contains(&s.dport) {
            *out.entry(s.state).or_insert(0) += 1;
        }
    }
    out
}

fn netlink_tcp(c: &mut Counter) -> Vec<InetSock> {
    let mut v = Vec::new();
    c.for_each_tcp_netlink(&mut |s| v.push(*s)).unwrap();
    v
}

fn proc_tcp() -> Vec<InetSock> {
    let mut v = Vec::new();
    for (f, fam) in [
        ("/proc/net/tcp", libc::AF_INET),
        ("/proc/net/tcp6", libc::AF_INET6),
    ] {
        let text = std::fs::read_to_string(f).unwrap();
        parse_inet_table(fam as u8, &text, |s| v.push(*s)).unwrap();
    }
    v
}

/// `ss -tan` (or net-tools `netstat -tan`) lines touching `ports`, as state → count.
fn tool_states(tool: &str, ports: &[u16]) -> Option<BTreeMap<u8, u64>> {
    let out = Command::new(tool).args(["-tan"]).output().ok()?;
    assert!(out.status.success(), "{tool}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        // ss: State Recv-Q Send-Q Local Peer; netstat: Proto Recv-Q Send-Q Local Foreign State.
        let (state, local, peer) = match tool {
            "ss" if cols.len() >= 5 => (cols[0], cols[3], cols[4]),
            "netstat" if cols.len() >= 6 && cols[0].starts_with("tcp") => {
                (cols[5], cols[3], cols[4])
            }
            _ => continue,
        };
        let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        if !ports
            .iter()
            .any(|p| port(local) == Some(*p) || port(peer) == Some(*p))
        {
            continue;
        }
        let name = match state {
            "ESTABLISHED" => "ESTAB",
            "TIME_WAIT" => "TIME-WAIT",
            "CLOSE_WAIT" => "CLOSE-WAIT",
            "FIN_WAIT2" => "FIN-WAIT-2",
            "FIN_WAIT1" => "FIN-WAIT-1",
            "LAST_ACK" => "LAST-ACK",
            s => s,
        };
        let st = STATE_NAMES
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("{tool} state {state}"));
        *counts.entry(st as u8).or_insert(0) += 1;
    }
    Some(counts)
}

fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wk_core::testing::wait_for(what, Duration::from_secs(10), ok);
}

#[test]
fn netstat_sees_exactly_the_sockets_it_made() {
    // Ports another test used a moment ago may still have TIME_WAIT sockets (std binds
    // with SO_REUSEADDR, so bind(0) can hand them out again): take ports where only our
    // three listeners are seen.
    let mut c = Counter::new();
    let (listener, p, r1, r2, q) = (0..50)
        .find_map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let p = listener.local_addr().unwrap().port();
            let (r1, q) = reuseport(true, 0);
            let (r2, _) = reuseport(true, q);
            let only_ours: BTreeMap<u8, u64> = [(10, 3)].into();
            (own_states(&netlink_tcp(&mut c), &[p, q]) == only_ours)
                .then_some((listener, p, r1, r2, q))
        })
        .expect("two ports without leftover sockets");

    // ESTABLISHED pair.
    let c1 = TcpStream::connect(("127.0.0.1", p)).unwrap();
    let (s1, _) = listener.accept().unwrap();
    // TIME_WAIT: the client closes first, then the server: the active closer waits.
    let c2 = TcpStream::connect(("127.0.0.1", p)).unwrap();
    let (mut s2, _) = listener.accept().unwrap();
    drop(c2);
    let mut b = [0u8; 1];
    assert_eq!(s2.read(&mut b).unwrap(), 0, "EOF after the client's FIN");
    drop(s2);
    // CLOSE_WAIT on the server, FIN_WAIT2 on the client: the server never closes.
    let c3 = TcpStream::connect(("127.0.0.1", p)).unwrap();
    let (mut s3, _) = listener.accept().unwrap();
    drop(c3);
    assert_eq!(s3.read(&mut b).unwrap(), 0);

    let ports = [p, q];
    let want: BTreeMap<u8, u64> = [(1, 2), (5, 1), (6, 1), (8, 1), (10, 3)].into();
    wait_for("the TIME_WAIT and FIN_WAIT2 states", || {
        own_states(&netlink_tcp(&mut c), &ports) == want
    });
    assert!(
        c.uses_legacy_request(),
        "TCPDIAG_GETSOCK refused by this kernel"
    );
    assert_eq!(own_states(&proc_tcp(), &ports), want, "/proc/net/tcp");
    // The legacy one-walk request and the two by-family requests see the same sockets.
    c.set_legacy_request(false);
    assert_eq!(own_states(&netlink_tcp(&mut c), &ports), want, "by family");
    c.set_legacy_request(true);

    // ss counts every listener; so does our raw walk (de-duplication is in the tally).
    let ss = tool_states("ss", &ports).expect("ss (iproute2) is needed for this test");
    assert_eq!(ss, want, "ss -tan");
    match tool_states("netstat", &ports) {
        Some(n) => assert_eq!(n, want, "netstat -tan (net-tools)"),
        None => eprintln!("net-tools netstat not installed: comparison skipped"),
    }

    // The tally counts the two SO_REUSEPORT listeners of q once: the host-wide LISTEN count
    // is the number of distinct (laddr, raddr) listeners, checked against a recount here.
    let (tcp, raw) = stable(&mut c, |c| c.tcp_states_netlink().unwrap());
    assert_eq!(tcp, recount(&raw), "tally vs recount");
    let q_listeners = raw.iter().filter(|s| s.state == 10 && s.sport == q).count();
    assert_eq!(q_listeners, 2);

    // Keep everything alive until here.
    drop((listener, r1, r2, c1, s1, s3));
}

/// Runs `f` between two raw netlink walks until both walks agree; returns f's result and
/// the walk.
fn stable<T>(c: &mut Counter, mut f: impl FnMut(&mut Counter) -> T) -> (T, Vec<InetSock>) {
    for _ in 0..50 {
        let before = netlink_tcp(c);
        let v = f(c);
        let after = netlink_tcp(c);
        if before == after {
            return (v, after);
        }
    }
    panic!("TCP sockets never stayed still for two reads in a row");
}

/// An independent recount of a raw walk with gopsutil's key: (state, laddr, raddr) for every
/// state (the tally only keys LISTEN and CLOSE, where duplicates can occur).
fn recount(raw: &[InetSock]) -> [u64; 12] {
    let mut seen = HashSet::new();
    let mut out = [0u64; 12];
    for s in raw {
        let mapped = |fam: u8, a: &[u8; 16]| -> [u8; 16] {
            if fam == libc::AF_INET as u8 {
                let mut m = [0u8; 16];
                m[10] = 0xff;
                m[11] = 0xff;
                m[12..].copy_from_slice(&a[..4]);
                m
            } else {
                *a
            }
        };
        let key = (
            s.state,
            mapped(s.family, &s.src),
            s.sport,
            mapped(s.family, &s.dst),
            s.dport,
        );
        if (1..12).contains(&s.state) && seen.insert(key) {
            out[s.state as usize] += 1;
        }
    }
    out
}

#[test]
fn netlink_and_proc_give_the_same_counts() {
    // Hold a few sockets of each kind for the duration of the test.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.write_all(b"x").unwrap();
    let (_u1, up) = reuseport(false, 0);
    let (_u2, _) = reuseport(false, up);
    let u3 = UdpSocket::bind("127.0.0.1:0").unwrap();
    u3.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, up))
        .unwrap();
    let (_t1, tp) = reuseport(true, 0);
    let (_t2, _) = reuseport(true, tp);

    let paths = HostPaths::default();
    // A fresh counter for every count: a kept one reads the fds of known sockets again only
    // at its full-read period, so two counts of one counter agree even while other processes
    // open unix sockets, and `a == b` would not show that nothing changed.
    let count = |source| {
        Counter::new()
            .count(&paths, source, UnixCounting::PerFd)
            .unwrap()
    };
    let mut last = None;
    for _ in 0..50 {
        let a = count(Source::Netlink);
        let p = count(Source::Proc);
        let b = count(Source::Netlink);
        if a == b {
            assert_eq!(a, p, "netlink vs /proc");
            assert!(a.udp >= 2, "our UDP sockets: {a:?}");
            assert!(a.tcp[10] >= 2 && a.tcp[1] >= 2, "{a:?}");
            drop((l, c, s, u3));
            return;
        }
        last = Some((a, p, b));
    }
    panic!("counts never stable: {last:?}");
}

/// tcp_none and the unix part of udp_socket recounted with Telegraf 1.39's rule (gopsutil
/// ≥ v4.26.3): one per process fd referring to the socket, one per socket when no fd of it is
/// visible — from /proc/net/unix and our own walk of /proc/*/fd.
fn unix_recount() -> (u64, u64) {
    let mut fds: std::collections::HashMap<u64, u64> = Default::default();
    for pid in std::fs::read_dir("/proc").unwrap().flatten() {
        if !pid
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(dir) = std::fs::read_dir(pid.path().join("fd")) else {
            continue;
        };
        for fd in dir.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                *fds.entry(inode.parse().unwrap()).or_default() += 1;
            }
        }
    }
    let text = std::fs::read_to_string("/proc/net/unix").unwrap();
    let (mut stream, mut dgram) = (0, 0);
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_ascii_whitespace().collect();
        let n = fds
            .get(&cols[6].parse().unwrap())
            .copied()
            .unwrap_or(0)
            .max(1);
        if cols[4] == "0002" {
            dgram += n;
        } else {
            stream += n;
        }
    }
    (stream, dgram)
}

#[test]
fn netstat_input_fields() {
    let mut plan = super::plan("[[inputs.netstat]]\n");
    let mut c = Counter::new();
    let paths = HostPaths::default();
    for _ in 0..50 {
        let before: Counts = c
            .count(&paths, Source::Netlink, UnixCounting::PerFd)
            .unwrap();
        let unix_before = unix_recount();
        let out = plan.inputs[0].gather(1, &GlobalTags::default());
        let after = c
            .count(&paths, Source::Netlink, UnixCounting::PerFd)
            .unwrap();
        let unix_after = unix_recount();
        if before != after || unix_before != unix_after {
            continue;
        }
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.metrics.len(), 1);
        let m = &out.metrics[0];
        assert_eq!(m.name, "netstat");
        assert_eq!(m.fields.len(), 13);
        let int = |k: &str| match m.field(k) {
            Some(FieldValue::Int(v)) => *v as u64,
            other => panic!("{k}: {other:?}"),
        };
        for (st, name) in TCP_FIELDS.iter().enumerate().skip(1) {
            assert_eq!(int(name), after.tcp[st], "{name}");
        }
        let (unix_stream, unix_dgram) = unix_after;
        assert_eq!(int("tcp_none"), unix_stream, "tcp_none");
        assert_eq!(after.unix_stream, unix_stream);
        assert_eq!(int("udp_socket"), after.udp + unix_dgram, "udp_socket");
        // Telegraf ≤ 1.38.2's per-(type, path) counting is never above 1.39's per-fd one.
        let old = c
            .count(&paths, Source::Netlink, UnixCounting::TelegrafKey)
            .unwrap();
        assert!(old.unix_stream <= unix_stream);
        let mut rows = 0;
        let text = std::fs::read_to_string("/proc/net/unix").unwrap();
        parse_unix(&text, |_| rows += 1).unwrap();
        eprintln!(
            "unix sockets: {rows} rows; Telegraf 1.39: {unix_stream} stream + {unix_dgram} dgram"
        );
        return;
    }
    panic!("socket counts never stable around the gather");
}

/// The case: 20 unix stream socketpairs, 5 datagram socketpairs and a named listener
/// with 3 accepted connections, all held by this process (one fd each), add 47 to tcp_none
/// and 10 to udp_socket under Telegraf 1.39's counting (≤ 1.38.2 added 2 and 1).
#[test]
fn unix_socketpairs_count_per_fd_as_telegraf_1_39() {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let paths = HostPaths::default();
    let mut c = Counter::new();
    let mut count = || {
        let n = c.count(&paths, Source::Proc, UnixCounting::PerFd).unwrap();
        (n.unix_stream, n.unix_dgram)
    };
    for round in 0..50 {
        let b0 = count();
        let streams: Vec<_> = (0..20).map(|_| UnixStream::pair().unwrap()).collect();
        let dgrams: Vec<_> = (0..5).map(|_| UnixDatagram::pair().unwrap()).collect();
        let path = dir.path().join(format!("l{round}"));
        let listener = UnixListener::bind(&path).unwrap();
        let clients: Vec<_> = (0..3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        let accepted: Vec<_> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        let c1 = count();
        let c1b = count();
        drop((streams, dgrams, listener, clients, accepted));
        let b2 = count();
        if b0 == b2 && c1 == c1b {
            assert_eq!((c1.0 - b0.0, c1.1 - b0.1), (47, 10), "{b0:?} → {c1:?}");
            return;
        }
    }
    panic!("the machine's unix sockets never held still");
}

/// At 1 M sockets a gather cost 9× the netlink walk: the per-fd unix count read every fd of
/// every process again each gather (one readlink per TCP socket too). Once the fd map has
/// read them, a gather reads only what changed: the 2,000 TCP sockets this test holds are not
/// read again, and TCP is still counted through netlink.
#[test]
fn a_gather_does_not_read_every_fd_again() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let held: Vec<(TcpStream, TcpStream)> = (0..1000)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            (c, l.accept().unwrap().0)
        })
        .collect();
    let paths = HostPaths::default();
    let mut c = Counter::new();
    let first = c
        .count(&paths, Source::Netlink, UnixCounting::PerFd)
        .unwrap();
    let s1 = c.fd_map_stats().expect("per-fd counting made the map");
    assert!(
        s1.readlinks >= 2000,
        "the first gather reads every fd: {s1:?}"
    );
    assert!(first.tcp[1] >= 2000, "{first:?}");
    let second = c
        .count(&paths, Source::Netlink, UnixCounting::PerFd)
        .unwrap();
    let s2 = c.fd_map_stats().unwrap();
    let again = s2.readlinks - s1.readlinks;
    // Other tests start processes and open fds meanwhile (read in full when new): a few
    // hundred at most, never the 2,000 sockets held here.
    assert!(again < 1000, "second gather: {again} readlinks ({s2:?})");
    assert!(second.tcp[1] >= 2000, "{second:?}");
    assert_eq!(
        c.uses_netlink(),
        (true, true),
        "TCP and UDP through netlink"
    );
    drop(held);
}
