//! `[[inputs.net]]`: per-interface network counters from `/proc/net/dev`, plus the link speed
//! from `/sys/class/net/<if>/speed`. See README.md for the schema.

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::glob::GlobSet;
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "net",
    description: "Network interface counters (bytes, packets, errors, drops) and link speed",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// `IFF_UP` in `/sys/class/net/<if>/flags`.
const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK` in `/sys/class/net/<if>/flags`.
const IFF_LOOPBACK: u32 = 0x8;

/// One interface line of /proc/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub name: String,
    pub bytes_recv: u64,
    pub packets_recv: u64,
    pub err_in: u64,
    pub drop_in: u64,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    pub err_out: u64,
    pub drop_out: u64,
}

/// Parses /proc/net/dev: two header lines, then `name: 8 rx columns 8 tx columns`. Columns
/// beyond the 16th (none so far) are ignored; fewer than 12 (up to tx drop) is an error
/// naming the 1-based line.
pub fn parse_net_dev(text: &str) -> Result<Vec<DevCounters>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        // Interface names cannot contain ':' on Linux except for old alias names ("eth0:1"),
        // so split at the last one, as gopsutil does.
        let Some(colon) = line.rfind(':') else {
            return Err((
                i + 1,
                format!("no ':' after the interface name in {line:?}"),
            ));
        };
        let name = line[..colon].trim();
        if name.is_empty() {
            return Err((i + 1, "empty interface name".to_owned()));
        }
        let mut v = [0u64; 12];
        let mut n = 0;
        for (slot, col) in v.iter_mut().zip(line[colon + 1..].split_ascii_whitespace()) {
            *slot = col
                .parse()
                .map_err(|_| (i + 1, format!("bad number {col:?} for interface {name}")))?;
            n += 1;
        }
        if n < v.len() {
            return Err((
                i + 1,
                format!("interface {name} has {n} columns, expected at least 12"),
            ));
        }
        out.push(DevCounters {
            name: name.to_owned(),
            bytes_recv: v[0],
            packets_recv: v[1],
            err_in: v[2],
            drop_in: v[3],
            bytes_sent: v[8],
            packets_sent: v[9],
            err_out: v[10],
            drop_out: v[11],
        });
    }
    Ok(out)
}

/// Parses `/sys/class/net/<if>/flags` ("0x1003\n").
pub fn parse_flags(text: &str) -> Option<u32> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    u32::from_str_radix(hex, 16).ok()
}

/// Parses `/sys/class/net/<if>/speed`; -1 (Telegraf's "unknown") when it is not a number or
/// negative (the kernel prints -1 for SPEED_UNKNOWN; virtual NICs fail the read with EINVAL).
pub fn parse_speed(text: &str) -> i64 {
    match text.trim().parse::<i64>() {
        Ok(v) if v >= 0 => v,
        _ => -1,
    }
}

struct Net {
    paths: HostPaths,
    interfaces: GlobSet,
    /// Telegraf skips the up/loopback checks when HOST_PROC is set: the flags it would read
    /// belong to the agent's own network namespace, not to the watched /proc.
    check_flags: bool,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let patterns = opts.strings("interfaces");
    let interfaces = match GlobSet::new(&patterns) {
        Ok(g) => g,
        Err(e) => {
            opts.error_at("interfaces", e);
            GlobSet::default()
        }
    };
    // Since Telegraf 1.37 the `interface=all` protocol line is gone and this option is a no-op.
    opts.accepted(&["ignore_protocol_stats"]);
    Box::new(Net {
        paths: ctx.paths.clone(),
        interfaces,
        check_flags: !ctx.paths.proc_overridden,
    })
}

impl Net {
    /// Whether an interface is reported: listed by a glob, or (no globs) up and not loopback.
    fn selected(&self, name: &str) -> bool {
        if !self.interfaces.is_empty() {
            return self.interfaces.is_match(name);
        }
        if !self.check_flags {
            return true;
        }
        // An interface without a flags file is one Telegraf's net.Interfaces() would not list.
        let Ok(text) = std::fs::read_to_string(self.paths.sys(&format!("class/net/{name}/flags")))
        else {
            return false;
        };
        match parse_flags(&text) {
            Some(f) => f & IFF_UP != 0 && f & IFF_LOOPBACK == 0,
            None => false,
        }
    }

    fn speed(&self, name: &str) -> i64 {
        std::fs::read_to_string(self.paths.sys(&format!("class/net/{name}/speed")))
            .map_or(-1, |t| parse_speed(&t))
    }
}

impl Input for Net {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let devs = self.paths.parse_proc("net/dev", parse_net_dev)?;
        for d in devs {
            if !self.selected(&d.name) {
                continue;
            }
            let speed = self.speed(&d.name);
            let m = acc
                .metric("net")
                .with_tag("interface", d.name)
                .with_field("bytes_sent", d.bytes_sent)
                .with_field("bytes_recv", d.bytes_recv)
                .with_field("packets_sent", d.packets_sent)
                .with_field("packets_recv", d.packets_recv)
                .with_field("err_in", d.err_in)
                .with_field("err_out", d.err_out)
                .with_field("drop_in", d.drop_in)
                .with_field("drop_out", d.drop_out)
                .with_field("speed", speed);
            acc.push(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn parses_current_kernel() {
        let text = format!(
            "{HEADER}    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  eth0: 59013570    3630    1    2    0     0          0         0   267565    3126    3    4    0     0       0          0\n"
        );
        let d = parse_net_dev(&text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1],
            DevCounters {
                name: "eth0".into(),
                bytes_recv: 59013570,
                packets_recv: 3630,
                err_in: 1,
                drop_in: 2,
                bytes_sent: 267565,
                packets_sent: 3126,
                err_out: 3,
                drop_out: 4,
            }
        );
    }

    #[test]
    fn glued_name_and_extra_columns() {
        // Large counters glue to the colon; a future kernel may add columns.
        let text = format!("{HEADER}eth0:123456789012 1 0 0 0 0 0 0 5 6 0 0 0 0 0 0 99 98\n");
        let d = parse_net_dev(&text).unwrap();
        assert_eq!(d[0].bytes_recv, 123456789012);
        assert_eq!(d[0].bytes_sent, 5);
        assert_eq!(d[0].packets_sent, 6);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let short = format!("{HEADER}eth0: 1 2 3\n");
        assert_eq!(parse_net_dev(&short).unwrap_err().0, 3);
        let garbage = format!("{HEADER}lo: 1 2 3 4 5 6 7 8 9 10 11 12\neth0 1 2\n");
        assert_eq!(parse_net_dev(&garbage).unwrap_err().0, 4);
        let bad = format!("{HEADER}eth0: 1 2 x 4 5 6 7 8 9 10 11 12\n");
        assert!(parse_net_dev(&bad).unwrap_err().1.contains("\"x\""));
        assert!(parse_net_dev("").unwrap().is_empty());
    }

    #[test]
    fn flags_and_speed() {
        assert_eq!(parse_flags("0x1003\n"), Some(0x1003));
        assert_eq!(parse_flags("1003"), None);
        assert_eq!(parse_speed("1000\n"), 1000);
        assert_eq!(parse_speed("-1\n"), -1);
        assert_eq!(parse_speed(""), -1);
    }

    /// Without `interfaces`, only up, non-loopback interfaces with a flags file are reported.
    #[test]
    fn up_and_not_loopback_without_globs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut paths = HostPaths::under(tmp.path());
        paths.proc_overridden = false;
        for (name, flags) in [("lo", "0x9"), ("eth0", "0x1003"), ("ifb0", "0x82")] {
            let dir = paths.sys(&format!("class/net/{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("flags"), flags).unwrap();
        }
        let mut net = Net {
            paths: paths.clone(),
            interfaces: GlobSet::default(),
            check_flags: true,
        };
        assert!(net.selected("eth0"));
        assert!(!net.selected("lo"));
        assert!(!net.selected("ifb0"));
        assert!(!net.selected("gone0"));
        net.check_flags = false;
        assert!(net.selected("lo") && net.selected("gone0"));
        net.interfaces = GlobSet::new(&["l*"]).unwrap();
        assert!(net.selected("lo") && !net.selected("eth0"));
    }
}
