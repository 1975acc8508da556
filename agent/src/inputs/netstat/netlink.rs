//! A minimal NETLINK_SOCK_DIAG client over `libc`: one socket and one receive buffer, reused
//! for every dump; messages are walked in place and handed out as [`InetSock`] values on the
//! stack, so a dump allocates nothing per socket.
//!
//! Layouts (include/uapi/linux/netlink.h, inet_diag.h), all in host byte order except the ports
//! and addresses of `inet_diag_sockid`, which are big-endian:
//! - `nlmsghdr` (16 bytes): len u32, type u16, flags u16, seq u32, pid u32.
//! - `inet_diag_req_v2` (56 bytes): family u8, protocol u8, ext u8, pad u8, states u32, id.
//! - legacy `inet_diag_req` (60 bytes): family u8, src_len u8, dst_len u8, ext u8, id, states
//!   u32, dbs u32.
//! - `inet_diag_sockid` (48 bytes): sport be16, dport be16, src [be32; 4], dst [be32; 4],
//!   if u32, cookie [u32; 2].
//! - `inet_diag_msg` (72 bytes): family u8, state u8, timer u8, retrans u8, id, expires u32,
//!   rqueue u32, wqueue u32, uid u32, inode u32.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NETLINK_SOCK_DIAG` (= `NETLINK_INET_DIAG`).
pub const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// `SOCK_DIAG_BY_FAMILY`: one family per request.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Legacy `TCPDIAG_GETSOCK`: TCP of both families in one table walk.
pub const TCPDIAG_GETSOCK: u16 = 18;
/// All twelve TCP states (`1 << TCP_ESTABLISHED` … `1 << TCP_CLOSING`, bit 0 unused). The
/// kernel adds `TCPF_NEW_SYN_RECV` itself when `TCPF_SYN_RECV` is set and reports those
/// request sockets as SYN_RECV, as /proc/net/tcp does.
pub const ALL_STATES: u32 = 0xFFF;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;
const INET_DIAG_MSG_LEN: usize = 72;
/// The kernel sizes dump skbs from the largest receive buffer seen, capped at
/// SKB_WITH_OVERHEAD(32 KiB): 64 KiB always holds a whole skb.
pub const RECV_BUF_LEN: usize = 64 * 1024;

/// One socket of a dump, copied out of the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSock {
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u8,
    /// Kernel TCP state number (1 ESTABLISHED … 11 CLOSING); 7 or 1 for UDP.
    pub state: u8,
    pub sport: u16,
    pub dport: u16,
    /// Raw address bytes; for IPv4 only the first four are meaningful.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub inode: u32,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// A system call failed.
    #[error("netlink sock_diag: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered with an error (e.g. ENOENT: the protocol's diag module is absent).
    #[error("netlink sock_diag: kernel error {0}")]
    Kernel(io::Error),
    /// A reply did not have the expected shape.
    #[error("netlink sock_diag: malformed reply: {0}")]
    Malformed(String),
}

/// What a receive buffer contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More messages follow in later reads.
    More,
    /// NLMSG_DONE seen.
    Done,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walks the netlink messages of one receive buffer. Messages of another sequence number
/// (leftovers of an aborted earlier dump) are skipped. `interrupted` is set when the kernel
/// flags the dump as inconsistent (NLM_F_DUMP_INTR: the tables changed during the walk).
/// With `parse = false` only the headers are looked at (the cost floor of a dump).
pub fn walk(
    buf: &[u8],
    seq: u32,
    parse: bool,
    interrupted: &mut bool,
    f: &mut dyn FnMut(&InetSock),
) -> Result<Step, DiagError> {
    let mut off = 0;
    while buf.len() - off >= NLMSG_HDRLEN {
        let len = u32_at(buf, off) as usize;
        let ty = u16_at(buf, off + 4);
        let flags = u16_at(buf, off + 6);
        let mseq = u32_at(buf, off + 8);
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            return Err(DiagError::Malformed(format!(
                "message length {len} at offset {off} of a {}-byte read",
                buf.len()
            )));
        }
        if mseq == seq {
            if flags & NLM_F_DUMP_INTR != 0 {
                *interrupted = true;
            }
            match ty {
                NLMSG_DONE => return Ok(Step::Done),
                NLMSG_ERROR => {
                    if len < NLMSG_HDRLEN + 4 {
                        return Err(DiagError::Malformed("short NLMSG_ERROR".into()));
                    }
                    let errno = -(u32_at(buf, off + NLMSG_HDRLEN) as i32);
                    if errno == 0 {
                        // An ACK: the request is finished.
                        return Ok(Step::Done);
                    }
                    return Err(DiagError::Kernel(io::Error::from_raw_os_error(errno)));
                }
                NLMSG_NOOP => {}
                _ if !parse => {}
                _ => {
                    if len < NLMSG_HDRLEN + INET_DIAG_MSG_LEN {
                        return Err(DiagError::Malformed(format!(
                            "inet_diag_msg of {} bytes, expected {INET_DIAG_MSG_LEN}",
                            len - NLMSG_HDRLEN
                        )));
                    }
                    let p = &buf[off + NLMSG_HDRLEN..off + NLMSG_HDRLEN + INET_DIAG_MSG_LEN];
                    let mut src = [0u8; 16];
                    let mut dst = [0u8; 16];
                    src.copy_from_slice(&p[8..24]);
                    dst.copy_from_slice(&p[24..40]);
                    f(&InetSock {
                        family: p[0],
                        state: p[1],
                        sport: u16::from_be_bytes([p[4], p[5]]),
                        dport: u16::from_be_bytes([p[6], p[7]]),
                        src,
                        dst,
                        inode: u32_at(p, 68),
                    });
                }
            }
        }
        off += align4(len);
        if off >= buf.len() {
            break;
        }
    }
    Ok(Step::More)
}

/// The request bytes: `SOCK_DIAG_BY_FAMILY` (v2) for one family and protocol, or the legacy
/// `TCPDIAG_GETSOCK` for TCP of both families. No extensions are asked for: state counting
/// needs only the fixed header.
pub fn request(kind: Request, seq: u32) -> ([u8; 76], usize) {
    let (ty, body_len) = match kind {
        Request::ByFamily { .. } => (SOCK_DIAG_BY_FAMILY, 56),
        Request::LegacyTcp => (TCPDIAG_GETSOCK, 60),
    };
    let len = NLMSG_HDRLEN + body_len;
    let mut b = [0u8; 76];
    b[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&ty.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    let body = &mut b[NLMSG_HDRLEN..];
    match kind {
        Request::ByFamily { family, protocol } => {
            body[0] = family;
            body[1] = protocol;
            body[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
        }
        Request::LegacyTcp => {
            // The kernel ignores the family of a legacy request (AF_UNSPEC: both).
            body[0] = libc::AF_INET as u8;
            body[52..56].copy_from_slice(&ALL_STATES.to_ne_bytes());
        }
    }
    (b, len)
}

/// Which dump to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    ByFamily { family: u8, protocol: u8 },
    LegacyTcp,
}

/// An open NETLINK_SOCK_DIAG socket and its receive buffer.
pub struct SockDiag {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    /// Opens the socket (fails where netlink is filtered, e.g. some sandboxes).
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A dump never takes seconds; do not hang a gather forever if the kernel goes quiet.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: valid fd, pointer to a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SockDiag {
            fd,
            buf: vec![0u8; RECV_BUF_LEN],
            seq: 0,
        })
    }

    fn send(&mut self, kind: Request) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let (req, len) = request(kind, self.seq);
        let req = &req[..len];
        // SAFETY: zeroed sockaddr_nl is valid; family set below; pid 0 = the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid fd; req and addr are live for the call with the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// One read into the buffer; returns the number of bytes, skipping messages not sent by
    /// the kernel.
    fn recv(&mut self) -> Result<usize, DiagError> {
        loop {
            // SAFETY: zeroed sockaddr_nl/iovec/msghdr are valid; the pointers set below stay
            // live for the call and the lengths match the buffers.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            // SAFETY: see above.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(DiagError::Malformed(format!(
                    "reply larger than the {}-byte buffer",
                    self.buf.len()
                )));
            }
            if addr.nl_pid != 0 {
                continue;
            }
            return Ok(n as usize);
        }
    }

    /// Runs one dump, calling `f` for each socket; returns true when the kernel flagged the
    /// dump as interrupted (tables changed during the walk: a socket may be missed or seen
    /// twice).
    pub fn dump(&mut self, kind: Request, f: &mut dyn FnMut(&InetSock)) -> Result<bool, DiagError> {
        self.run(kind, true, f)
    }

    /// Runs one dump and looks only at message headers; returns the bytes received. This is
    /// the floor any sock_diag state counter pays (system calls and kernel walk).
    pub fn dump_floor(&mut self, kind: Request) -> Result<usize, DiagError> {
        let mut bytes = 0;
        let seq = self.send(kind)?;
        let mut intr = false;
        loop {
            let n = self.recv()?;
            bytes += n;
            if walk(&self.buf[..n], seq, false, &mut intr, &mut |_| {})? == Step::Done {
                return Ok(bytes);
            }
        }
    }

    fn run(
        &mut self,
        kind: Request,
        parse: bool,
        f: &mut dyn FnMut(&InetSock),
    ) -> Result<bool, DiagError> {
        let seq = self.send(kind)?;
        let mut intr = false;
        loop {
            let n = self.recv()?;
            if walk(&self.buf[..n], seq, parse, &mut intr, f)? == Step::Done {
                return Ok(intr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b
    }

    /// An inet_diag_msg for 127.0.0.1:sport -> 127.0.0.1:dport in `state`.
    fn diag_msg(seq: u32, family: u8, state: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut b = header(NLMSG_HDRLEN + INET_DIAG_MSG_LEN, 20, 0x2, seq);
        let mut p = [0u8; INET_DIAG_MSG_LEN];
        p[0] = family;
        p[1] = state;
        p[4..6].copy_from_slice(&sport.to_be_bytes());
        p[6..8].copy_from_slice(&dport.to_be_bytes());
        p[8..12].copy_from_slice(&[127, 0, 0, 1]);
        p[24..28].copy_from_slice(&[127, 0, 0, 1]);
        p[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        b.extend_from_slice(&p);
        b
    }

    #[test]
    fn walks_messages_in_place() {
        let mut buf = diag_msg(7, 2, 10, 80, 0);
        buf.extend(diag_msg(6, 2, 1, 1, 2)); // stale sequence number: skipped
        buf.extend(diag_msg(7, 10, 1, 5000, 80));
        let mut seen = Vec::new();
        let mut intr = false;
        let step = walk(&buf, 7, true, &mut intr, &mut |s| seen.push(*s)).unwrap();
        assert_eq!(step, Step::More);
        assert!(!intr);
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].state, seen[0].sport, seen[0].dport), (10, 80, 0));
        assert_eq!(&seen[0].src[..4], &[127, 0, 0, 1]);
        assert_eq!(seen[0].inode, 4242);
        assert_eq!((seen[1].family, seen[1].sport), (10, 5000));

        let mut done = header(20, NLMSG_DONE, 0x2 | NLM_F_DUMP_INTR, 7);
        done.extend_from_slice(&0u32.to_ne_bytes());
        let mut n = 0;
        let step = walk(&done, 7, true, &mut intr, &mut |_| n += 1).unwrap();
        assert_eq!((step, intr, n), (Step::Done, true, 0));
        // Headers-only walk still finds the end and reports nothing.
        buf.extend(done);
        let mut intr = false;
        assert_eq!(
            walk(&buf, 7, false, &mut intr, &mut |_| n += 1).unwrap(),
            Step::Done
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn kernel_errors_and_garbage() {
        let mut err = header(36, NLMSG_ERROR, 0, 3);
        err.extend_from_slice(&(-2i32).to_ne_bytes());
        err.extend_from_slice(&[0u8; 16]);
        let mut intr = false;
        match walk(&err, 3, true, &mut intr, &mut |_| {}) {
            Err(DiagError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(2)),
            other => panic!("{other:?}"),
        }
        // Length field beyond the buffer, below the header size, and a short diag message.
        let long = header(4096, 20, 0, 3);
        assert!(matches!(
            walk(&long, 3, true, &mut intr, &mut |_| {}),
            Err(DiagError::Malformed(_))
        ));
        let tiny = header(8, 20, 0, 3);
        assert!(walk(&tiny, 3, true, &mut intr, &mut |_| {}).is_err());
        let mut short = header(NLMSG_HDRLEN + 8, 20, 0, 3);
        short.extend_from_slice(&[0u8; 8]);
        assert!(walk(&short, 3, true, &mut intr, &mut |_| {}).is_err());
        // A trailing partial header is ignored, an empty buffer is "more".
        assert_eq!(
            walk(&[0u8; 5], 3, true, &mut intr, &mut |_| {}).unwrap(),
            Step::More
        );
    }

    #[test]
    fn request_layout() {
        let (r, len) = request(
            Request::ByFamily {
                family: 10,
                protocol: 17,
            },
            9,
        );
        assert_eq!(len, 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(u16_at(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16_at(&r, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32_at(&r, 8), 9);
        assert_eq!((r[16], r[17]), (10, 17));
        assert_eq!(u32_at(&r, 20), ALL_STATES);
        let (l, len) = request(Request::LegacyTcp, 1);
        assert_eq!(len, 76);
        assert_eq!(u16_at(&l, 4), TCPDIAG_GETSOCK);
        assert_eq!(u32_at(&l, 16 + 52), ALL_STATES);
    }
}
