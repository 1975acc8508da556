//! `[[inputs.vip]]` (wk-agent only; no Telegraf peer): for each configured virtual IP, whether
//! this host holds it right now (the address is on one of its interfaces, read from the kernel
//! over rtnetlink `RTM_GETADDR`, no process spawned) and, when keepalived writes its state to
//! a file, that state. Summed across hosts, `held` shows split brain (> 1) or no holder (0).
//! See README.md.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "vip",
    description: "Virtual IP holder state (keepalived/VRRP): is each address on this host now",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// The states keepalived hands its notify scripts (and `STOP` on shutdown; `INIT` and
/// `DELETED` in newer versions).
pub const STATES: [&str; 6] = ["MASTER", "BACKUP", "FAULT", "STOP", "INIT", "DELETED"];

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The virtual IPs, as configured (a `/prefix` is dropped).
    pub addresses: Vec<IpAddr>,
    /// Count an address only on this interface.
    pub interface: Option<String>,
    /// keepalived's state, as a notify script writes it.
    pub state_file: Option<PathBuf>,
}

/// Reads `192.0.2.10`, `192.0.2.10/24` (keepalived's `virtual_ipaddress` style) or an IPv6
/// address.
pub fn parse_vip(s: &str) -> Result<IpAddr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))?;
    if let Some(p) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{s:?}: bad prefix length")),
        }
    }
    Ok(ip)
}

fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let mut addresses = Vec::new();
    for a in opts.strings("addresses") {
        match parse_vip(&a) {
            Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
            Ok(_) => {}
            Err(e) => opts.error_at("addresses", e),
        }
    }
    if addresses.is_empty() && !opts.has("addresses") {
        opts.error_at("addresses", "list the virtual IPs to watch");
    }
    let interface = opts.opt_string("interface").filter(|s| !s.is_empty());
    let state_file = opts
        .opt_string("state_file")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    Settings {
        addresses,
        interface,
        state_file,
    }
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Vip {
        settings: read_settings(opts),
    })
}

/// The state in a notify script's file: the first known state word of its last non-empty
/// line, case-insensitive (`MASTER`, or `INSTANCE VI_1 MASTER 100` as the script's arguments).
pub fn parse_state(text: &str) -> Option<&'static str> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    line.split_whitespace()
        .find_map(|w| STATES.iter().find(|s| s.eq_ignore_ascii_case(w)).copied())
}

/// One interface address from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub index: u32,
    pub addr: IpAddr,
    /// IPv6 duplicate address detection failed: the address is configured but not usable.
    pub dad_failed: bool,
    /// `IFA_LABEL` (IPv4 only): the interface name or an alias such as `eth0:vip`.
    pub label: Option<String>,
}

// rtnetlink (include/uapi/linux/netlink.h, rtnetlink.h, if_addr.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_F_DADFAILED: u8 = 0x08;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The `RTM_GETADDR` dump request for every family.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + IFADDRMSG_LEN) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[0u8; IFADDRMSG_LEN]);
    b
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walks one receive buffer of the dump, adding the addresses found; `Ok(true)` once
/// `NLMSG_DONE` is seen.
pub fn parse_messages(buf: &[u8], out: &mut Vec<IfAddr>) -> Result<bool, String> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, off).unwrap_or(0) as usize;
        let ty = u16_at(buf, off + 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!(
                "message of {len} bytes at {off} overruns the buffer"
            ));
        }
        let msg = &buf[off + NLMSG_HDRLEN..off + len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(msg, 0).map_or(0, |e| e as i32);
                return Err(format!(
                    "kernel error: {}",
                    io::Error::from_raw_os_error(-errno)
                ));
            }
            RTM_NEWADDR => {
                if let Some(a) = parse_ifaddr(msg)? {
                    out.push(a);
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    Ok(false)
}

/// One `RTM_NEWADDR` body: `ifaddrmsg` then attributes. `IFA_LOCAL` is this host's address
/// (on point-to-point links `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
fn parse_ifaddr(msg: &[u8]) -> Result<Option<IfAddr>, String> {
    if msg.len() < IFADDRMSG_LEN {
        return Err("short ifaddrmsg".into());
    }
    let family = msg[0];
    let flags = msg[2];
    let index = u32_at(msg, 4).unwrap_or(0);
    let (mut local, mut address, mut label) = (None, None, None);
    let mut off = IFADDRMSG_LEN;
    while off + 4 <= msg.len() {
        let len = u16_at(msg, off).unwrap_or(0) as usize;
        let ty = u16_at(msg, off + 2).unwrap_or(0);
        if len < 4 || off + len > msg.len() {
            return Err(format!("attribute of {len} bytes overruns its message"));
        }
        let data = &msg[off + 4..off + len];
        let ip = match (family, data.len()) {
            (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (AF_INET6, 16) => {
                let b: [u8; 16] = data.try_into().unwrap_or([0; 16]);
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        };
        match ty {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_LABEL => {
                let name = data.split(|&b| b == 0).next().unwrap_or(&[]);
                label = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
        off += align4(len);
    }
    Ok(local.or(address).map(|addr| IfAddr {
        index,
        addr,
        dad_failed: flags & IFA_F_DADFAILED != 0,
        label,
    }))
}

/// Every address of every interface of this network namespace, with interface names.
fn addresses() -> Result<Vec<(IfAddr, String)>, String> {
    use rustix::net::{
        AddressFamily, RecvFlags, SendFlags, SocketType, netlink::SocketAddrNetlink, recv, sendto,
        socket,
    };
    let fd: OwnedFd = socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(|e| format!("rtnetlink socket: {e}"))?;
    sendto(
        &fd,
        &dump_request(1),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )
    .map_err(|e| format!("rtnetlink request: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut found = Vec::new();
    loop {
        let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| format!("rtnetlink answer: {e}"))?;
        if n == 0 || parse_messages(&buf[..n], &mut found)? {
            break;
        }
    }
    // Names by index over an ordinary socket (SIOCGIFNAME), in this namespace.
    let probe =
        socket(AddressFamily::INET, SocketType::DGRAM, None).map_err(|e| format!("socket: {e}"))?;
    Ok(found
        .into_iter()
        .map(|a| {
            let name = rustix::net::netdevice::index_to_name(&probe, a.index)
                .ok()
                .or_else(|| a.label.clone())
                .unwrap_or_else(|| a.index.to_string());
            (a, name)
        })
        .collect())
}

/// The interface holding `vip` among `addrs` (restricted to `interface` when given).
pub fn holder<'a>(
    vip: &IpAddr,
    addrs: &'a [(IfAddr, String)],
    interface: Option<&str>,
) -> Option<&'a str> {
    addrs
        .iter()
        .find(|(a, name)| {
            a.addr == *vip && !a.dad_failed && interface.is_none_or(|i| i == name.as_str())
        })
        .map(|(_, name)| name.as_str())
}

/// The input.
pub struct Vip {
    pub settings: Settings,
}

impl Input for Vip {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let s = &self.settings;
        let addrs = addresses().map_err(GatherError::Other)?;
        let state = s
            .state_file
            .as_ref()
            .and_then(|p| match std::fs::read_to_string(p) {
                Ok(text) => {
                    let st = parse_state(&text);
                    if st.is_none() {
                        acc.add_error(format!(
                            "{}: no keepalived state (MASTER, BACKUP, FAULT, …) in {:?}",
                            p.display(),
                            text.trim()
                        ));
                    }
                    st
                }
                Err(e) => {
                    acc.add_error(GatherError::io(p, e));
                    None
                }
            });
        for vip in &s.addresses {
            let held = holder(vip, &addrs, s.interface.as_deref());
            let mut m = acc.metric("vip");
            m.set_tag("address", vip.to_string());
            if let Some(i) = held.or(s.interface.as_deref()) {
                m.set_tag("interface", i);
            }
            m.add_field("held", i64::from(held.is_some()));
            if let Some(st) = state {
                m.add_field("state", st);
            }
            acc.push(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWADDR` message as the kernel sends it.
    fn newaddr(family: u8, flags: u8, index: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 24, flags, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        for (ty, data) in attrs {
            body.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&ty.to_ne_bytes());
            body.extend_from_slice(data);
            body.resize(align4(body.len()), 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWADDR.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    fn done() -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0u8; 2 + 4 + 4 + 4]);
        m
    }

    #[test]
    fn dump_with_local_peer_label_and_v6() {
        let mut buf = newaddr(
            AF_INET,
            0,
            2,
            &[
                (IFA_ADDRESS, &[192, 0, 2, 10]),
                (IFA_LOCAL, &[192, 0, 2, 10]),
                (IFA_LABEL, b"eth0:vip\0"),
            ],
        );
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
        buf.extend(newaddr(
            AF_INET,
            0,
            3,
            &[(IFA_ADDRESS, &[10, 0, 0, 2]), (IFA_LOCAL, &[10, 0, 0, 1])],
        ));
        let v6: [u8; 16] = "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets();
        buf.extend(newaddr(AF_INET6, IFA_F_DADFAILED, 2, &[(IFA_ADDRESS, &v6)]));
        let mut out = Vec::new();
        assert!(!parse_messages(&buf, &mut out).unwrap());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].label.as_deref(), Some("eth0:vip"));
        assert_eq!(out[1].addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert!(out[2].dad_failed);
        assert!(parse_messages(&done(), &mut out).unwrap());
    }

    #[test]
    fn kernel_errors_and_broken_messages() {
        let mut e = Vec::new();
        e.extend_from_slice(&36u32.to_ne_bytes());
        e.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        e.extend_from_slice(&[0u8; 10]);
        e.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        e.extend_from_slice(&[0u8; 16]);
        let err = parse_messages(&e, &mut Vec::new()).unwrap_err();
        assert!(err.contains("kernel error"), "{err}");
        let mut m = newaddr(AF_INET, 0, 1, &[(IFA_LOCAL, &[1, 2, 3, 4])]);
        m.truncate(m.len() - 2);
        assert!(parse_messages(&m, &mut Vec::new()).is_err());
        // An attribute claiming more than its message.
        let mut m = newaddr(AF_INET, 0, 1, &[(IFA_LOCAL, &[1, 2, 3, 4])]);
        m[NLMSG_HDRLEN + IFADDRMSG_LEN] = 200;
        assert!(parse_messages(&m, &mut Vec::new()).is_err());
    }

    #[test]
    fn holder_honours_interface_and_dad() {
        let a = |ip: &str, dad_failed: bool, name: &str| {
            (
                IfAddr {
                    index: 1,
                    addr: ip.parse().unwrap(),
                    dad_failed,
                    label: None,
                },
                name.to_owned(),
            )
        };
        let addrs = vec![
            a("192.0.2.10", false, "eth0"),
            a("2001:db8::10", true, "eth0"),
        ];
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(holder(&vip, &addrs, None), Some("eth0"));
        assert_eq!(holder(&vip, &addrs, Some("eth0")), Some("eth0"));
        assert_eq!(holder(&vip, &addrs, Some("eth1")), None);
        assert_eq!(holder(&"2001:db8::10".parse().unwrap(), &addrs, None), None);
    }

    #[test]
    fn states_from_notify_files() {
        assert_eq!(parse_state("MASTER\n"), Some("MASTER"));
        assert_eq!(parse_state("INSTANCE VI_1 BACKUP 100\n"), Some("BACKUP"));
        assert_eq!(parse_state("MASTER\nfault\n\n"), Some("FAULT"));
        assert_eq!(parse_state("GROUP G1 stop"), Some("STOP"));
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("hello world"), None);
    }

    #[test]
    fn vip_spellings() {
        assert_eq!(
            parse_vip("192.0.2.10/24"),
            Ok("192.0.2.10".parse().unwrap())
        );
        assert_eq!(parse_vip("2001:db8::1"), Ok("2001:db8::1".parse().unwrap()));
        assert!(parse_vip("192.0.2.10/33").is_err());
        assert!(parse_vip("vip.example.org").is_err());
    }

    #[test]
    fn request_is_a_dump_of_every_family() {
        let r = dump_request(7);
        assert_eq!(r.len(), 24);
        assert_eq!(u16_at(&r, 4), Some(RTM_GETADDR));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(r[16], 0);
    }

    #[test]
    fn this_host_has_its_loopback() {
        let addrs = addresses().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(holder(&lo, &addrs, None), Some("lo"));
    }
}
