//! `[[inputs.netstat]]`: TCP connection counts per state, UDP sockets and unix sockets, with
//! Telegraf's (gopsutil's) de-duplication. TCP and UDP come from a netlink sock_diag dump (no
//! allocation per socket), or from `/proc/net/{tcp,tcp6,udp,udp6}` when netlink is unavailable
//! or when the /proc root is not our own; unix sockets always from `/proc/net/unix`.
//! See README.md for the schema and the counting rules.

pub mod netlink;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use self::netlink::{DiagError, InetSock, Request, SockDiag};
use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;
use wk_core::sockmap::SockMap;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "netstat",
    description: "TCP connections per state, UDP and unix socket counts",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
/// Kernel TCP state numbers whose sockets can share (laddr, raddr): SO_REUSEPORT listeners,
/// and CLOSE sockets that are bound but not connected.
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
const TCP_SYN_RECV: u8 = 3;
/// TCP_NEW_SYN_RECV: request sockets; the kernel reports them as SYN_RECV, mapped defensively.
const TCP_NEW_SYN_RECV: u8 = 12;

/// Telegraf's field names, indexed by kernel TCP state number (0 unused).
pub const TCP_FIELDS: [&str; 12] = [
    "",
    "tcp_established",
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_fin_wait1",
    "tcp_fin_wait2",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_listen",
    "tcp_closing",
];

/// One gather's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// TCP sockets by kernel state number (1 ESTABLISHED … 11 CLOSING; index 0 unused).
    pub tcp: [u64; 12],
    /// Distinct UDP (v4 + v6) sockets.
    pub udp: u64,
    /// Unix stream and seqpacket sockets, counted as Telegraf does (see [`UnixCounting`]).
    pub unix_stream: u64,
    /// Unix datagram sockets, idem.
    pub unix_dgram: u64,
}

/// How unix sockets are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixCounting {
    /// Telegraf ≥ 1.38.3 (gopsutil ≥ v4.26.3, "prevent incorrect deduplication of unnamed
    /// UNIX sockets"): one per process fd referring to the socket, or one per socket when no
    /// fd of it can be seen (another user's process when not root). What Telegraf 1.39 emits.
    PerFd,
    /// Telegraf ≤ 1.38.2 (gopsutil's old key, type and path): unnamed sockets collapse to one
    /// per type, a listener and the connections it accepted count once.
    TelegrafKey,
    /// Every socket (inode) once.
    PerSocket,
}

/// Where TCP and UDP sockets were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Netlink,
    Proc,
}

/// De-duplicating tally, kept across gathers so that steady state allocates nothing.
#[derive(Debug, Default)]
struct Tally {
    counts: Counts,
    /// Keys of inet sockets in states where duplicates can occur (LISTEN, CLOSE, UDP).
    inet_seen: HashSet<[u8; 38]>,
    /// 64-bit hashes of unix (type, path) keys.
    unix_seen: HashSet<u64>,
}

/// An address as gopsutil compares it: Go prints an IPv4-mapped IPv6 address like the IPv4
/// one, so both are keyed as `::ffff:a.b.c.d`.
fn key_addr(family: u8, raw: &[u8; 16]) -> [u8; 16] {
    if family == AF_INET {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&raw[..4]);
        a
    } else {
        *raw
    }
}

impl Tally {
    fn clear(&mut self) {
        self.counts = Counts::default();
        self.inet_seen.clear();
        self.unix_seen.clear();
    }

    fn key(proto: u8, state: u8, s: &InetSock) -> [u8; 38] {
        let mut k = [0u8; 38];
        k[0] = proto;
        k[1] = state;
        k[2..18].copy_from_slice(&key_addr(s.family, &s.src));
        k[18..20].copy_from_slice(&s.sport.to_be_bytes());
        k[20..36].copy_from_slice(&key_addr(s.family, &s.dst));
        k[36..38].copy_from_slice(&s.dport.to_be_bytes());
        k
    }

    fn add_tcp(&mut self, s: &InetSock) {
        let state = if s.state == TCP_NEW_SYN_RECV {
            TCP_SYN_RECV
        } else {
            s.state
        };
        let Some(slot) = self.counts.tcp.get_mut(state as usize) else {
            return;
        };
        if state == 0 {
            return;
        }
        if (state == TCP_LISTEN || state == TCP_CLOSE)
            && !self.inet_seen.insert(Self::key(IPPROTO_TCP, state, s))
        {
            return;
        }
        *slot += 1;
    }

    fn add_udp(&mut self, s: &InetSock) {
        // gopsutil gives every UDP socket the status NONE: the state is not in the key.
        if self.inet_seen.insert(Self::key(IPPROTO_UDP, 0, s)) {
            self.counts.udp += 1;
        }
    }

    /// `fds(inode)`: how many process fds refer to the socket (per-fd counting).
    fn add_unix(&mut self, row: &UnixRow<'_>, how: UnixCounting, fds: &dyn Fn(u64) -> u32) {
        let n = if how == UnixCounting::PerFd {
            u64::from(fds(row.inode).max(1))
        } else {
            1
        };
        if how == UnixCounting::TelegrafKey {
            let mut h = std::hash::DefaultHasher::new();
            row.kind.hash(&mut h);
            row.path.hash(&mut h);
            if !self.unix_seen.insert(h.finish()) {
                return;
            }
        }
        if row.kind == libc::SOCK_DGRAM as u32 {
            self.counts.unix_dgram += n;
        } else {
            self.counts.unix_stream += n;
        }
    }
}

/// One row of `/proc/net/unix` as gopsutil reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixRow<'a> {
    /// Socket type (1 stream, 2 datagram, 5 seqpacket).
    pub kind: u32,
    /// The bound path ("@name" for abstract ones); "" when unnamed or when the path contains
    /// whitespace (gopsutil takes the 8th column only when there are exactly 8).
    pub path: &'a str,
    /// The socket's inode (0 when the column is not a number).
    pub inode: u64,
}

/// Parses `/proc/net/unix` (header line skipped): `Num RefCount Protocol Flags Type St Inode
/// [Path]`. A row with fewer than 7 columns or a bad type is an error naming the line.
pub fn parse_unix<'t>(
    text: &'t str,
    mut f: impl FnMut(UnixRow<'t>),
) -> Result<(), (usize, String)> {
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split_ascii_whitespace();
        let kind = cols.nth(4);
        let inode = cols.nth(1); // the inode column must exist
        let (Some(kind), Some(inode)) = (kind, inode) else {
            return Err((
                i + 1,
                format!("expected at least 7 columns, found {line:?}"),
            ));
        };
        // gopsutil parses the hex type column as decimal; the values (0001, 0002, 0005) agree.
        let kind: u32 = kind
            .parse()
            .map_err(|_| (i + 1, format!("bad socket type {kind:?}")))?;
        let path = match (cols.next(), cols.next()) {
            (Some(p), None) => p,
            _ => "",
        };
        f(UnixRow {
            kind,
            path,
            inode: inode.parse().unwrap_or(0),
        });
    }
    Ok(())
}

fn parse_hex_addr(family: u8, text: &str) -> Option<([u8; 16], u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut out = [0u8; 16];
    let words = if family == AF_INET { 1 } else { 4 };
    if addr.len() != words * 8 {
        return None;
    }
    // Each 32-bit word is printed as the u32 the kernel holds in memory (%08X of a __be32),
    // so its native-endian bytes are the address bytes on any host.
    for w in 0..words {
        let v = u32::from_str_radix(addr.get(w * 8..w * 8 + 8)?, 16).ok()?;
        out[w * 4..w * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    Some((out, port))
}

/// Parses one data row of `/proc/net/{tcp,tcp6,udp,udp6}`: `sl local rem st …`; any columns
/// after `st` (tx/rx queue, timers, uid, inode, refcount, drops …) are ignored.
pub fn parse_inet_row(family: u8, line: &str) -> Result<InetSock, String> {
    let mut cols = line.split_ascii_whitespace();
    let (_, Some(local), Some(remote), Some(st)) =
        (cols.next(), cols.next(), cols.next(), cols.next())
    else {
        return Err(format!("expected at least 4 columns, found {line:?}"));
    };
    let (src, sport) =
        parse_hex_addr(family, local).ok_or_else(|| format!("bad local address {local:?}"))?;
    let (dst, dport) =
        parse_hex_addr(family, remote).ok_or_else(|| format!("bad remote address {remote:?}"))?;
    let state = u8::from_str_radix(st, 16).map_err(|_| format!("bad state {st:?}"))?;
    Ok(InetSock {
        family,
        state,
        sport,
        dport,
        src,
        dst,
        inode: 0,
    })
}

/// Walks the rows of one `/proc/net/{tcp,udp}[6]` text (header line skipped).
pub fn parse_inet_table(
    family: u8,
    text: &str,
    mut f: impl FnMut(&InetSock),
) -> Result<(), (usize, String)> {
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        f(&parse_inet_row(family, line).map_err(|m| (i + 1, m))?);
    }
    Ok(())
}

/// How often each process's fd table is read in full for the per-fd unix count (the staleness
/// bound of [`SockMap`]; between full reads only changed processes are read). An hour: what
/// can be stale is rare and only moves a count by the fds of one socket, while at 1 M
/// sockets reading every fd costs about 4× a gather.
pub const FD_FULL_READ_PERIOD: Duration = Duration::from_secs(3600);

/// Counts sockets for the `netstat` input and for benchmarks. Holds the netlink socket, the
/// receive buffer, the text buffer for /proc files, the de-duplication sets and the map of
/// which fds hold which unix socket, all kept between gathers.
#[derive(Default)]
pub struct Counter {
    diag: Option<SockDiag>,
    tally: Tally,
    text: String,
    /// Unix socket inode → fds, for the per-fd count (made at the first gather that needs it).
    fds: Option<SockMap>,
    /// Full-read period of `fds`; `None`: [`FD_FULL_READ_PERIOD`].
    fd_period: Option<Duration>,
    /// Netlink gave up for TCP / UDP on this host (socket refused, diag module missing).
    tcp_netlink_off: bool,
    udp_netlink_off: bool,
    /// Use the legacy one-walk TCP request (falls back to two by-family requests if refused).
    legacy_off: bool,
}

impl Counter {
    /// A counter with nothing opened yet.
    pub fn new() -> Counter {
        Counter::default()
    }

    fn diag(&mut self) -> Result<&mut SockDiag, DiagError> {
        if self.diag.is_none() {
            self.diag = Some(SockDiag::open()?);
        }
        // The branch above filled it.
        self.diag
            .as_mut()
            .ok_or_else(|| DiagError::Malformed("no socket".into()))
    }

    /// Walks every TCP socket of our network namespace through netlink (the legacy single-walk
    /// request, or one request per family where that is refused).
    pub fn for_each_tcp_netlink(&mut self, f: &mut dyn FnMut(&InetSock)) -> Result<(), DiagError> {
        if !self.legacy_off {
            match self.diag()?.dump(Request::LegacyTcp, f) {
                Ok(_) => return Ok(()),
                Err(DiagError::Kernel(e)) => {
                    tracing::debug!(
                        "netstat: legacy TCPDIAG_GETSOCK refused ({e}); using SOCK_DIAG_BY_FAMILY"
                    );
                    self.legacy_off = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.for_each_by_family(IPPROTO_TCP, f)
    }

    /// Walks every UDP socket (v4 then v6) through netlink.
    pub fn for_each_udp_netlink(&mut self, f: &mut dyn FnMut(&InetSock)) -> Result<(), DiagError> {
        self.for_each_by_family(IPPROTO_UDP, f)
    }

    /// Walks every `protocol` socket, v4 then v6, with one SOCK_DIAG_BY_FAMILY dump each.
    fn for_each_by_family(
        &mut self,
        protocol: u8,
        f: &mut dyn FnMut(&InetSock),
    ) -> Result<(), DiagError> {
        for family in [AF_INET, AF_INET6] {
            self.diag()?
                .dump(Request::ByFamily { family, protocol }, f)?;
        }
        Ok(())
    }

    /// TCP sockets per kernel state through netlink, de-duplicated as Telegraf does (index =
    /// state number, 0 unused). The hot path the benchmark measures.
    pub fn tcp_states_netlink(&mut self) -> Result<[u64; 12], DiagError> {
        let mut tally = std::mem::take(&mut self.tally);
        tally.clear();
        let r = self.for_each_tcp_netlink(&mut |s| tally.add_tcp(s));
        let out = tally.counts.tcp;
        self.tally = tally;
        r.map(|()| out)
    }

    /// The netlink TCP dump alone, messages not parsed: returns the bytes received. The cost
    /// floor for [`Counter::tcp_states_netlink`].
    pub fn tcp_netlink_floor(&mut self) -> Result<usize, DiagError> {
        if !self.legacy_off {
            return self.diag()?.dump_floor(Request::LegacyTcp);
        }
        let mut n = 0;
        for family in [AF_INET, AF_INET6] {
            let req = Request::ByFamily {
                family,
                protocol: IPPROTO_TCP,
            };
            n += self.diag()?.dump_floor(req)?;
        }
        Ok(n)
    }

    /// Sets how often the fd tables are read in full (zero: every gather, a fresh walk each
    /// time); the map is rebuilt.
    pub fn set_fd_full_read_period(&mut self, period: Duration) {
        self.fd_period = Some(period);
        self.fds = None;
    }

    /// Work counters of the fd map (None before the first per-fd count).
    pub fn fd_map_stats(&self) -> Option<wk_core::sockmap::Stats> {
        self.fds.as_ref().map(SockMap::stats)
    }

    /// True while TCP and UDP are read through netlink (not given up for /proc).
    pub fn uses_netlink(&self) -> (bool, bool) {
        (!self.tcp_netlink_off, !self.udp_netlink_off)
    }

    /// True while TCP dumps use the legacy single-walk request (the kernel accepted it).
    pub fn uses_legacy_request(&self) -> bool {
        !self.legacy_off
    }

    /// Forces the two-request (SOCK_DIAG_BY_FAMILY v4 + v6) TCP dump, for measurements.
    pub fn set_legacy_request(&mut self, on: bool) {
        self.legacy_off = !on;
    }

    /// Reads `path` into the reused text buffer.
    fn read(&mut self, path: &Path) -> Result<(), GatherError> {
        self.text.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut self.text))
            .map(|_| ())
            .map_err(|e| GatherError::io(path, e))
    }

    /// Adds the rows of one /proc inet table; a missing `*6` file means IPv6 is off.
    fn add_proc_table(
        &mut self,
        tally: &mut Tally,
        path: &Path,
        family: u8,
        udp: bool,
    ) -> Result<(), GatherError> {
        match self.read(path) {
            Ok(()) => {}
            Err(GatherError::Io { source, .. })
                if family == AF_INET6 && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        parse_inet_table(family, &self.text, |s| {
            if udp {
                tally.add_udp(s)
            } else {
                tally.add_tcp(s)
            }
        })
        .map_err(|(line, msg)| GatherError::malformed(path, line, msg))
    }

    /// TCP sockets per state from `<proc>/net/tcp` and `tcp6`, same rules as the netlink path.
    pub fn tcp_states_proc(&mut self, proc: &Path) -> Result<[u64; 12], GatherError> {
        let mut tally = std::mem::take(&mut self.tally);
        tally.clear();
        let r = self
            .add_proc_table(&mut tally, &proc.join("net/tcp"), AF_INET, false)
            .and_then(|()| {
                self.add_proc_table(&mut tally, &proc.join("net/tcp6"), AF_INET6, false)
            });
        let out = tally.counts.tcp;
        self.tally = tally;
        r.map(|()| out)
    }

    /// Every count of the `netstat` input. `source` picks netlink (falling back to /proc per
    /// protocol when netlink does not work here) or /proc only.
    pub fn count(
        &mut self,
        paths: &HostPaths,
        source: Source,
        unix: UnixCounting,
    ) -> Result<Counts, GatherError> {
        let mut tally = std::mem::take(&mut self.tally);
        tally.clear();
        let r = self.count_into(&mut tally, paths, source, unix);
        let out = tally.counts;
        self.tally = tally;
        r.map(|()| out)
    }

    /// After a failed dump: true when netlink cannot work here (socket refused, protocol not
    /// supported by the kernel), so /proc is used from now on; otherwise (a transient error)
    /// the socket is dropped, with any half-read reply, and reopened at the next gather.
    fn netlink_failed(&mut self, e: &DiagError) -> bool {
        if self.diag.is_none() || matches!(e, DiagError::Kernel(_)) {
            return true;
        }
        self.diag = None;
        false
    }

    fn count_into(
        &mut self,
        tally: &mut Tally,
        paths: &HostPaths,
        source: Source,
        unix: UnixCounting,
    ) -> Result<(), GatherError> {
        let netlink = source == Source::Netlink;
        let mut tcp_done = false;
        if netlink && !self.tcp_netlink_off {
            match self.for_each_tcp_netlink(&mut |s| tally.add_tcp(s)) {
                Ok(()) => tcp_done = true,
                Err(e) => {
                    tracing::debug!("netstat: {e}; reading /proc/net/tcp instead");
                    self.tcp_netlink_off = self.netlink_failed(&e);
                    tally.counts.tcp = [0; 12];
                    tally.inet_seen.clear();
                }
            }
        }
        if !tcp_done {
            self.add_proc_table(tally, &paths.proc("net/tcp"), AF_INET, false)?;
            self.add_proc_table(tally, &paths.proc("net/tcp6"), AF_INET6, false)?;
        }
        let mut udp_done = false;
        if netlink && !self.udp_netlink_off {
            match self.for_each_udp_netlink(&mut |s| tally.add_udp(s)) {
                Ok(()) => udp_done = true,
                Err(e) => {
                    tracing::debug!("netstat: {e}; reading /proc/net/udp instead");
                    self.udp_netlink_off = self.netlink_failed(&e);
                    tally.counts.udp = 0;
                    // Keys of UDP sockets are distinct from TCP ones (protocol byte).
                    tally.inet_seen.retain(|k| k[0] != IPPROTO_UDP);
                }
            }
        }
        if !udp_done {
            self.add_proc_table(tally, &paths.proc("net/udp"), AF_INET, true)?;
            self.add_proc_table(tally, &paths.proc("net/udp6"), AF_INET6, true)?;
        }
        let path = paths.proc("net/unix");
        self.read(&path)?;
        if unix != UnixCounting::PerFd {
            return parse_unix(&self.text, |row| tally.add_unix(&row, unix, &|_| 0))
                .map_err(|(line, msg)| GatherError::malformed(&path, line, msg));
        }
        // Who holds each unix socket: the fd map, brought up to date with this list of
        // sockets (only processes whose fds changed are read again; see wk_core::sockmap).
        if self.fds.as_ref().is_none_or(|m| m.root() != paths.proc) {
            let period = self.fd_period.unwrap_or(FD_FULL_READ_PERIOD);
            self.fds = Some(SockMap::new(&paths.proc, period, false));
        }
        let Some(map) = self.fds.as_mut() else {
            return Ok(());
        };
        map.begin();
        // A malformed row is reported by the counting pass below.
        let _ = parse_unix(&self.text, |row| {
            map.live(row.inode);
        });
        map.update(None);
        let map = &*map;
        parse_unix(&self.text, |row| {
            tally.add_unix(&row, unix, &|inode| map.fd_count(inode))
        })
        .map_err(|(line, msg)| GatherError::malformed(&path, line, msg))
    }
}

struct Netstat {
    paths: HostPaths,
    counter: Counter,
}

fn build(_opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Netstat {
        paths: ctx.paths.clone(),
        counter: Counter::new(),
    })
}

impl Input for Netstat {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        // Netlink sees the agent's own network namespace; with an explicit /proc root (a
        // container watching its host, or fixtures) the files under that root are the truth.
        let source = if self.paths.proc_overridden {
            Source::Proc
        } else {
            Source::Netlink
        };
        let c = self
            .counter
            .count(&self.paths, source, UnixCounting::PerFd)?;
        let mut m = acc.metric("netstat");
        m.fields.reserve(13);
        for (state, name) in TCP_FIELDS.iter().enumerate().skip(1) {
            m.add_field(*name, c.tcp[state] as i64);
        }
        m.add_field("tcp_none", c.unix_stream as i64);
        m.add_field("udp_socket", (c.udp + c.unix_dgram) as i64);
        acc.push(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17411 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17412 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:0277 01 00000000:00000000 00:00000000 00000000  1000        0 17413
   3: 0100007F:0277 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 17414 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:A1B4 0100007F:0277 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";

    fn tcp_counts(text: &str, family: u8) -> [u64; 12] {
        let mut t = Tally::default();
        parse_inet_table(family, text, |s| t.add_tcp(s)).unwrap();
        t.counts.tcp
    }

    #[test]
    fn tcp_rows_with_and_without_extra_columns() {
        let c = tcp_counts(TCP, AF_INET);
        // Two SO_REUSEPORT listeners on 127.0.0.1:631 count once.
        assert_eq!(c[10], 1);
        assert_eq!(c[1], 2);
        assert_eq!(c[6], 1);
        assert_eq!(c.iter().sum::<u64>(), 4);
        let s = parse_inet_row(AF_INET, TCP.lines().nth(3).unwrap()).unwrap();
        assert_eq!((s.sport, s.dport, s.state), (0xA1B2, 631, 1));
        assert_eq!(&s.src[..4], &[127, 0, 0, 1]);
    }

    #[test]
    fn tcp6_rows_and_mapped_addresses() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22 1 0 100 0 0 10 0
";
        let s = parse_inet_row(AF_INET6, text.lines().nth(2).unwrap()).unwrap();
        let mut loopback = [0u8; 16];
        loopback[15] = 1;
        assert_eq!(s.src, loopback);
        // Go prints ::ffff:127.0.0.1 as 127.0.0.1, so the addresses key alike...
        assert_eq!(
            key_addr(AF_INET6, &s_mapped(text)),
            key_addr(AF_INET, &[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        let mut t = Tally::default();
        parse_inet_table(AF_INET6, text, |s| t.add_tcp(s)).unwrap();
        assert_eq!(t.counts.tcp[10], 3);
        parse_inet_table(
            AF_INET,
            "h\n 0: 0100007F:0050 00000000:0000 0A 0 0 0 0 0 1\n 1: 00000000:0016 00000000:0000 0A\n",
            |s| t.add_tcp(s),
        )
        .unwrap();
        // ...but a v6 listener's remote "::" differs from a v4 one's "0.0.0.0" (as in Go), so
        // all five listeners count.
        assert_eq!(t.counts.tcp[10], 5);
    }

    fn s_mapped(text: &str) -> [u8; 16] {
        parse_inet_row(AF_INET6, text.lines().nth(3).unwrap())
            .unwrap()
            .src
    }

    #[test]
    fn malformed_inet_rows_name_the_line() {
        let e = parse_inet_table(AF_INET, "h\n 0: 0100007F:0277\n", |_| {}).unwrap_err();
        assert_eq!(e.0, 2);
        for bad in [
            " 0: 0100007G:0277 00000000:0000 0A",
            " 0: 0100007F 00000000:0000 0A",
            " 0: 0100007F:0277 00000000:0000 ZZ",
            " 0: 00007F:0277 00000000:0000 0A",
            " 0: 0100007F:12345 00000000:0000 0A",
        ] {
            assert!(parse_inet_row(AF_INET, bad).is_err(), "{bad}");
        }
        assert!(parse_inet_table(AF_INET, "header only\n", |_| {}).is_ok());
    }

    #[test]
    fn udp_rows_collapse_like_gopsutil() {
        // Two unbound sockets (0.0.0.0:0) in different states, and a udp "drops" column.
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0
  2: 00000000:0000 00000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 0
  3: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 5
";
        let mut t = Tally::default();
        parse_inet_table(AF_INET, text, |s| t.add_udp(s)).unwrap();
        assert_eq!(t.counts.udp, 2);
    }

    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/dbus/system_bus_socket
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/dbus/system_bus_socket
0000000000000000: 00000003 00000000 00000000 0001 03 102
0000000000000000: 00000003 00000000 00000000 0001 03 103
0000000000000000: 00000002 00000000 00000000 0002 01 104 @abstract
0000000000000000: 00000002 00000000 00000000 0002 01 105
0000000000000000: 00000002 00000000 00000000 0005 01 106
0000000000000000: 00000002 00000000 00000000 0001 01 107 /tmp/with space
";

    #[test]
    fn unix_counting() {
        let mut rows = Vec::new();
        parse_unix(UNIX, |r| rows.push(r)).unwrap();
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0].path, "/run/dbus/system_bus_socket");
        assert_eq!((rows[4].kind, rows[4].path), (2, "@abstract"));
        assert_eq!(
            rows[7].path, "",
            "a path with a space is dropped, as gopsutil does"
        );

        assert_eq!(rows[2].inode, 102);
        let none = HashMap::new();
        let count = |how, fds: &HashMap<u64, u32>| {
            let mut t = Tally::default();
            for r in &rows {
                t.add_unix(r, how, &|i| fds.get(&i).copied().unwrap_or(0));
            }
            (t.counts.unix_stream, t.counts.unix_dgram)
        };
        // ≤ 1.38.2: stream keys (1, dbus path), (1, ""), seqpacket (5, ""); dgram (2, @abstract),
        // (2, "").
        assert_eq!(count(UnixCounting::TelegrafKey, &none), (3, 2));
        assert_eq!(count(UnixCounting::PerSocket, &none), (6, 2));
        // 1.39: one per fd referring to the socket; a socket with no visible fd counts once.
        let fds: HashMap<u64, u32> = [(100, 3), (102, 2), (105, 2)].into_iter().collect();
        assert_eq!(count(UnixCounting::PerFd, &fds), (6 + 2 + 1, 2 + 1));
        assert_eq!(count(UnixCounting::PerFd, &none), (6, 2));
    }

    #[test]
    fn malformed_unix_rows_name_the_line() {
        let e = parse_unix("h\n0000: 00000002 0 0 0001 01\n", |_| {}).unwrap_err();
        assert_eq!(e.0, 2);
        let e = parse_unix("h\nx: 1 2 3 zz 01 100\n", |_| {}).unwrap_err();
        assert!(e.1.contains("\"zz\""));
    }

    #[test]
    fn tally_ignores_unknown_states_and_maps_new_syn_recv() {
        let mut s = parse_inet_row(AF_INET, " 0: 0100007F:0277 00000000:0000 0C").unwrap();
        let mut t = Tally::default();
        t.add_tcp(&s);
        s.state = 13;
        t.add_tcp(&s);
        s.state = 0;
        t.add_tcp(&s);
        assert_eq!(t.counts.tcp[3], 1);
        assert_eq!(t.counts.tcp.iter().sum::<u64>(), 1);
    }
}
