//! `[[inputs.net_response]]`: probes one TCP or UDP address per instance — connect, optionally
//! send a string and look for an expected string in the answer — and reports the outcome and
//! the response time, with Telegraf's tags, fields and result codes. See README.md.
//!
//! The probe is blocking I/O bounded by `timeout` (connect) and `read_timeout` (answer); the
//! agent runs every gather on tokio's blocking pool, so a slow target delays only this
//! instance.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "net_response",
    description: "Collect response time of a TCP or UDP connection",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// Telegraf's default for `timeout` and `read_timeout` (also used when they are set to 0).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Telegraf reads one UDP datagram into a 1024-byte buffer.
const UDP_BUF: usize = 1024;
/// The least time one of several addresses gets to connect (Go's `partialDeadline`).
const MIN_DIAL_SHARE: Duration = Duration::from_secs(2);
/// Longest TCP answer line we keep (Telegraf's textproto has no limit; we do not want one
/// misbehaving server to make us allocate without bound).
const MAX_LINE: usize = 64 * 1024;

/// The probed protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A probe's outcome; the discriminant is Telegraf's `result_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success = 0,
    Timeout = 1,
    ConnectionFailed = 2,
    ReadFailed = 3,
    StringMismatch = 4,
}

impl Outcome {
    /// The `result` tag and `result_type` field.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Timeout => "timeout",
            Outcome::ConnectionFailed => "connection_failed",
            Outcome::ReadFailed => "read_failed",
            Outcome::StringMismatch => "string_mismatch",
        }
    }
}

/// One probe's result: `response_time` is absent when Telegraf omits it (TCP timeout and
/// connection_failed, UDP connection_failed and read_failed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub outcome: Outcome,
    pub response_time: Option<f64>,
}

/// Validated options of one instance.
#[derive(Debug, Clone)]
pub struct Target {
    pub protocol: Protocol,
    /// Host as written (`localhost` when the address had none), without IPv6 brackets.
    pub host: String,
    /// Port as written (the `port` tag).
    pub port: String,
    /// The port number.
    pub port_num: u16,
    pub timeout: Duration,
    pub read_timeout: Duration,
    pub send: String,
    pub expect: String,
    /// Telegraf's `.*<expect>.*`, compiled at load (`None` when `expect` is empty).
    pub expect_re: Option<regex::Regex>,
}

/// An invalid option: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub key: &'static str,
    pub message: String,
}

fn opt_err(key: &'static str, message: impl Into<String>) -> OptionError {
    OptionError {
        key,
        message: message.into(),
    }
}

/// Splits `host:port` like Go's `net.SplitHostPort`: `[v6]:port` brackets are removed, a
/// bare IPv6 address (too many colons) and a missing port are errors.
pub fn split_host_port(address: &str) -> Result<(String, String), String> {
    if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("missing ']' in address {address:?}"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("missing port in address {address:?}"));
        };
        if port.contains([':', '[', ']']) {
            return Err(format!("too many colons in address {address:?}"));
        }
        return Ok((host.to_owned(), port.to_owned()));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("missing port in address {address:?}"));
    };
    if host.contains(':') {
        return Err(format!("too many colons in address {address:?}"));
    }
    if host.contains(['[', ']']) {
        return Err(format!("unexpected bracket in address {address:?}"));
    }
    Ok((host.to_owned(), port.to_owned()))
}

/// Validates the options as Telegraf's `Init` does (zero timeouts become 1 s).
pub fn validate(
    protocol: Option<&str>,
    address: Option<&str>,
    timeout: Duration,
    read_timeout: Duration,
    send: &str,
    expect: &str,
) -> Result<Target, OptionError> {
    let protocol = match protocol {
        None | Some("") => return Err(opt_err("protocol", "is required (tcp or udp)")),
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(other) => {
            return Err(opt_err(
                "protocol",
                format!("unknown protocol {other:?}; expected \"tcp\" or \"udp\""),
            ));
        }
    };
    let address = match address {
        None | Some("") => return Err(opt_err("address", "is required (host:port)")),
        Some(a) => a,
    };
    let (mut host, port) = split_host_port(address).map_err(|e| opt_err("address", e))?;
    if port.is_empty() {
        return Err(opt_err("address", format!("bad port in {address:?}")));
    }
    // Telegraf would also resolve a service name (`host:http`) at dial time; we need a number.
    let port_num: u16 = port.parse().map_err(|_| {
        opt_err(
            "address",
            format!("port {port:?} is not a number from 0 to 65535"),
        )
    })?;
    if host.is_empty() {
        host = "localhost".to_owned();
    }
    if protocol == Protocol::Udp {
        if send.is_empty() {
            return Err(opt_err("send", "send string cannot be empty for udp"));
        }
        if expect.is_empty() {
            return Err(opt_err("expect", "expected string cannot be empty for udp"));
        }
    }
    let nonzero = |d: Duration| if d.is_zero() { DEFAULT_TIMEOUT } else { d };
    // Telegraf builds `.*` + expect + `.*` (Go's RE2; the regex crate has the same syntax) and
    // would panic on a bad pattern: here it is a config error.
    let expect_re = if expect.is_empty() {
        None
    } else {
        Some(regex::Regex::new(&format!(".*{expect}.*")).map_err(|e| {
            opt_err(
                "expect",
                format!("{expect:?} is not a valid regular expression: {e}"),
            )
        })?)
    };
    Ok(Target {
        protocol,
        host,
        port,
        port_num,
        timeout: nonzero(timeout),
        read_timeout: nonzero(read_timeout),
        send: send.to_owned(),
        expect: expect.to_owned(),
        expect_re,
    })
}

/// Whether the answer matches `expect` as Telegraf matches it (`.*expect.*`); an empty
/// `expect` always does.
pub fn expect_found(answer: &str, t: &Target) -> bool {
    t.expect_re.as_ref().is_none_or(|re| re.is_match(answer))
}

/// The first line of a TCP answer as Go's `textproto.Reader.ReadLine` returns it: up to the
/// first `\n`, without `\r\n`; `None` when nothing came before EOF, timeout or error.
pub fn first_line(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..i],
        None => data,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some(String::from_utf8_lossy(line).into_owned())
}

fn resolve(t: &Target) -> Option<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port_num)
        .to_socket_addrs()
        .ok()?
        .collect();
    if addrs.is_empty() { None } else { Some(addrs) }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// Connects (trying each resolved address within `timeout`), sends, reads the first line.
pub fn probe_tcp(t: &Target) -> Result<Probe, GatherError> {
    let start = Instant::now();
    let deadline = start + t.timeout;
    let failed = |outcome| Probe {
        outcome,
        response_time: None,
    };
    // Go's DialTimeout reports a resolver failure as a non-timeout error: connection_failed.
    let Some(addrs) = resolve(t) else {
        return Ok(failed(Outcome::ConnectionFailed));
    };
    let mut stream = None;
    let mut timed_out = false;
    let n = addrs.len();
    for (i, addr) in addrs.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        // As Go's serial dial: each address gets its share of what is left (at least 2 s),
        // so one that drops SYNs does not eat the time of the others.
        let share = (left / (n - i) as u32).max(MIN_DIAL_SHARE).min(left);
        match TcpStream::connect_timeout(&addr, share) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => timed_out = is_timeout(&e),
        }
    }
    let Some(mut stream) = stream else {
        return Ok(failed(if timed_out {
            Outcome::Timeout
        } else {
            Outcome::ConnectionFailed
        }));
    };
    let mut response_time = start.elapsed().as_secs_f64();
    if !t.send.is_empty() {
        stream
            .write_all(t.send.as_bytes())
            .map_err(|e| GatherError::Other(format!("{}: send: {e}", address(t))))?;
        response_time = start.elapsed().as_secs_f64();
    }
    if t.expect.is_empty() {
        return Ok(Probe {
            outcome: Outcome::Success,
            response_time: Some(response_time),
        });
    }
    let data = read_line(&mut stream, t.read_timeout);
    let response_time = Some(start.elapsed().as_secs_f64());
    let outcome = match first_line(&data) {
        None => Outcome::ReadFailed,
        Some(line) if expect_found(&line, t) => Outcome::Success,
        Some(_) => Outcome::StringMismatch,
    };
    Ok(Probe {
        outcome,
        response_time,
    })
}

/// Reads until a `\n`, EOF, an error or `read_timeout` (a deadline for the whole line, as
/// Telegraf's `SetReadDeadline`); returns what arrived.
fn read_line(stream: &mut TcpStream, read_timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + read_timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while !data.contains(&b'\n') && data.len() < MAX_LINE {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    data
}

/// Sends `send` in one datagram and waits `read_timeout` for one answer. A name with several
/// addresses (`localhost`: `::1` and `127.0.0.1`) goes on to the next address when one
/// answers "port unreachable" (a server bound to one family only); a silent one is the end.
pub fn probe_udp(t: &Target) -> Result<Probe, GatherError> {
    probe_udp_at(t, resolve(t).unwrap_or_default())
}

/// [`probe_udp`] over the resolved addresses `addrs`.
pub fn probe_udp_at(t: &Target, addrs: Vec<SocketAddr>) -> Result<Probe, GatherError> {
    let start = Instant::now();
    let failed = |outcome| Probe {
        outcome,
        response_time: None,
    };
    if addrs.is_empty() {
        return Ok(failed(Outcome::ConnectionFailed));
    }
    let deadline = start + t.read_timeout;
    let io_err =
        |what: &str, e: std::io::Error| GatherError::Other(format!("{}: {what}: {e}", address(t)));
    let mut buf = [0u8; UDP_BUF];
    let mut answer = None;
    let mut connected = false;
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(sock) = UdpSocket::bind(local) else {
            continue;
        };
        if sock.connect(addr).is_err() {
            continue;
        }
        connected = true;
        sock.send(t.send.as_bytes())
            .map_err(|e| io_err("send", e))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| io_err("set read timeout", e))?;
        let refused = loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    answer = Some(n);
                    break false;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP port unreachable: maybe the server is on the other family.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break true,
                Err(_) => break false,
            }
        };
        if !refused {
            break;
        }
    }
    if !connected {
        return Ok(failed(Outcome::ConnectionFailed));
    }
    // Timeout, or every address refused: read_failed, no time.
    let Some(n) = answer else {
        return Ok(failed(Outcome::ReadFailed));
    };
    let response_time = Some(start.elapsed().as_secs_f64());
    let answer = String::from_utf8_lossy(&buf[..n]);
    let outcome = if expect_found(&answer, t) {
        Outcome::Success
    } else {
        Outcome::StringMismatch
    };
    Ok(Probe {
        outcome,
        response_time,
    })
}

fn address(t: &Target) -> String {
    if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    }
}

/// One configured address; `None` when the options were invalid (already reported).
struct NetResponse {
    target: Option<Target>,
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let protocol = opts.opt_string("protocol");
    let address = opts.opt_string("address");
    let timeout = opts.duration("timeout", DEFAULT_TIMEOUT);
    let read_timeout = opts.duration("read_timeout", DEFAULT_TIMEOUT);
    let send = opts.string("send", "");
    let expect = opts.string("expect", "");
    let target = match validate(
        protocol.as_deref(),
        address.as_deref(),
        timeout,
        read_timeout,
        &send,
        &expect,
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            opts.error_at(e.key, e.message);
            None
        }
    };
    Box::new(NetResponse { target })
}

impl Input for NetResponse {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let Some(t) = &self.target else {
            return Err(GatherError::Other("invalid configuration".into()));
        };
        let probe = match t.protocol {
            Protocol::Tcp => probe_tcp(t)?,
            Protocol::Udp => probe_udp(t)?,
        };
        let name = probe.outcome.name();
        let mut m = acc
            .metric("net_response")
            .with_tag("server", t.host.as_str())
            .with_tag("port", t.port.as_str())
            .with_tag("protocol", t.protocol.as_str())
            .with_tag("result", name);
        if let Some(rt) = probe.response_time {
            m.add_field("response_time", rt);
        }
        m.add_field("result_code", probe.outcome as u64);
        m.add_field("result_type", name);
        if !t.expect.is_empty() {
            m.add_field("string_found", probe.outcome == Outcome::Success);
        }
        acc.push(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = DEFAULT_TIMEOUT;

    fn ok(p: &str, a: &str, send: &str, expect: &str) -> Target {
        validate(Some(p), Some(a), S, S, send, expect).unwrap()
    }

    fn err(p: Option<&str>, a: Option<&str>, send: &str, expect: &str) -> OptionError {
        validate(p, a, S, S, send, expect).unwrap_err()
    }

    #[test]
    fn protocol_is_required_and_checked() {
        assert_eq!(err(None, Some("h:1"), "", "").key, "protocol");
        assert_eq!(err(Some(""), Some("h:1"), "", "").key, "protocol");
        let e = err(Some("icmp"), Some("h:1"), "", "");
        assert_eq!(e.key, "protocol");
        assert!(e.message.contains("icmp"), "{}", e.message);
        assert_eq!(ok("tcp", "h:1", "", "").protocol, Protocol::Tcp);
        assert_eq!(ok("udp", "h:1", "a", "b").protocol, Protocol::Udp);
    }

    #[test]
    fn address_forms() {
        assert_eq!(err(Some("tcp"), None, "", "").key, "address");
        assert_eq!(err(Some("tcp"), Some(""), "", "").key, "address");
        for bad in [
            "localhost",
            "host:",
            "::1:80",
            "[::1]",
            "[::1:80",
            "h:http",
            "h:70000",
            "h:-1",
        ] {
            let e = err(Some("tcp"), Some(bad), "", "");
            assert_eq!(e.key, "address", "{bad}");
        }
        let t = ok("tcp", ":80", "", "");
        assert_eq!(
            (t.host.as_str(), t.port.as_str(), t.port_num),
            ("localhost", "80", 80)
        );
        let t = ok("tcp", "[::1]:8080", "", "");
        assert_eq!((t.host.as_str(), t.port.as_str()), ("::1", "8080"));
        assert_eq!(address(&t), "[::1]:8080");
        let t = ok("tcp", "example.org:443", "", "");
        assert_eq!((t.host.as_str(), t.port_num), ("example.org", 443));
    }

    #[test]
    fn udp_needs_send_and_expect() {
        assert_eq!(err(Some("udp"), Some("h:1"), "", "x").key, "send");
        assert_eq!(err(Some("udp"), Some("h:1"), "x", "").key, "expect");
        // TCP needs neither.
        ok("tcp", "h:1", "", "");
    }

    #[test]
    fn zero_timeouts_become_one_second() {
        let t = validate(
            Some("tcp"),
            Some("h:1"),
            Duration::ZERO,
            Duration::ZERO,
            "",
            "",
        )
        .unwrap();
        assert_eq!((t.timeout, t.read_timeout), (S, S));
        let t = validate(
            Some("tcp"),
            Some("h:1"),
            Duration::from_millis(250),
            Duration::from_secs(3),
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            (t.timeout, t.read_timeout),
            (Duration::from_millis(250), Duration::from_secs(3))
        );
    }

    #[test]
    fn first_line_like_textproto() {
        assert_eq!(first_line(b""), None);
        assert_eq!(
            first_line(b"SSH-2.0-x\r\nmore").as_deref(),
            Some("SSH-2.0-x")
        );
        assert_eq!(first_line(b"a\nb\n").as_deref(), Some("a"));
        assert_eq!(first_line(b"partial").as_deref(), Some("partial"));
        assert_eq!(first_line(b"\n").as_deref(), Some(""));
        assert_eq!(
            first_line(b"\xff\xfe\n").as_deref(),
            Some("\u{fffd}\u{fffd}")
        );
    }

    /// `expect` is a regular expression, as Telegraf's `.*expect.*`.
    #[test]
    fn expect_is_a_regex() {
        let found =
            |answer: &str, expect: &str| expect_found(answer, &ok("tcp", "h:1", "", expect));
        assert!(found("SSH-2.0-OpenSSH_9.6", "SSH-2.0"));
        assert!(
            found("SSH-2x0-OpenSSH_9.6", "SSH-2.0"),
            "`.` is any character"
        );
        assert!(!found("HTTP/1.1 200", "SSH"));
        assert!(found("+PONG", r"^\+PONG$"));
        assert!(!found("x+PONG", r"^\+PONG$"));
        assert!(found("anything", ""));
        let e = err(Some("tcp"), Some("h:1"), "", "(unclosed");
        assert_eq!(e.key, "expect");
        assert!(
            e.message.contains("not a valid regular expression"),
            "{e:?}"
        );
    }

    #[test]
    fn result_codes_are_telegrafs() {
        let all = [
            (Outcome::Success, 0u64, "success"),
            (Outcome::Timeout, 1, "timeout"),
            (Outcome::ConnectionFailed, 2, "connection_failed"),
            (Outcome::ReadFailed, 3, "read_failed"),
            (Outcome::StringMismatch, 4, "string_mismatch"),
        ];
        for (o, code, name) in all {
            assert_eq!((o as u64, o.name()), (code, name));
        }
    }
}
