//! `[[inputs.nstat]]`: every kernel network counter of `/proc/net/netstat`, `/proc/net/snmp`
//! and `/proc/net/snmp6`, one line per file. See README.md for the schema.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::read_to_string;
use crate::metric::Metric;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "nstat",
    description: "Kernel network statistics from /proc/net/netstat, snmp and snmp6",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// One counter: its Telegraf field name and value.
pub type Counter = (String, i64);

/// Parses a header/value table (`/proc/net/netstat`, `/proc/net/snmp`): lines come in pairs,
/// `Prefix: Name1 Name2 …` then `Prefix: v1 v2 …`; each field is `Prefix` + `NameN` verbatim
/// (`TcpExtListenOverflows`). Zeros are kept only with `dump_zeros`; values that do not parse
/// as i64 are skipped, as in Telegraf. A value line with a different column count or prefix
/// than its header is an error naming the 1-based value line.
pub fn parse_table(text: &str, dump_zeros: bool) -> Result<Vec<Counter>, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    while let Some((hi, header)) = lines.next() {
        let mut names = header.split_ascii_whitespace();
        let Some(prefix) = names.next().and_then(|p| p.strip_suffix(':')) else {
            return Err((
                hi + 1,
                format!("expected a \"Prefix:\" header line, found {header:?}"),
            ));
        };
        let Some((vi, values)) = lines.next() else {
            return Err((hi + 1, format!("header line {prefix:?} has no value line")));
        };
        let mut vals = values.split_ascii_whitespace();
        if vals.next() != Some(header.split_ascii_whitespace().next().unwrap_or_default()) {
            return Err((
                vi + 1,
                format!("value line does not start with {prefix:?}: like its header"),
            ));
        }
        let (n_names, n_vals) = (names.clone().count(), vals.clone().count());
        if n_names != n_vals {
            return Err((
                vi + 1,
                format!("{prefix}: {n_vals} values for {n_names} names in the header"),
            ));
        }
        for (name, value) in names.zip(vals) {
            if let Some(v) = keep(value, dump_zeros) {
                out.push((format!("{prefix}{name}"), v));
            }
        }
    }
    Ok(out)
}

/// Parses `/proc/net/snmp6`: `Name value` pairs (`Ip6InReceives 12`), names verbatim. A line
/// that is not exactly a pair is an error naming the line.
pub fn parse_pairs(text: &str, dump_zeros: bool) -> Result<Vec<Counter>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split_ascii_whitespace();
        let (Some(name), value, None) = (cols.next(), cols.next(), cols.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err((i + 1, format!("expected \"name value\", found {line:?}")));
        };
        let Some(value) = value else {
            return Err((i + 1, format!("{name} has no value")));
        };
        if let Some(v) = keep(value, dump_zeros) {
            out.push((name.to_owned(), v));
        }
    }
    Ok(out)
}

/// Telegraf's rule: text exactly "0" is dropped unless `dump_zeros`; unparsable is dropped.
fn keep(value: &str, dump_zeros: bool) -> Option<i64> {
    if value == "0" {
        return dump_zeros.then_some(0);
    }
    value.parse().ok()
}

struct Nstat {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    dump_zeros: bool,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    // Telegraf falls back to the PROC_NET_* / PROC_ROOT environment variables when these are
    // empty; here the /proc root comes from HostPaths (HOST_PROC, [agent] host_proc) instead.
    let mut path = |key: &str, rel: &str| match opts.string(key, "") {
        s if s.is_empty() => ctx.paths.proc(rel),
        s => PathBuf::from(s),
    };
    let netstat = path("proc_net_netstat", "net/netstat");
    let snmp = path("proc_net_snmp", "net/snmp");
    let snmp6 = path("proc_net_snmp6", "net/snmp6");
    Box::new(Nstat {
        netstat,
        snmp,
        snmp6,
        dump_zeros: opts.bool("dump_zeros", false),
    })
}

type Parser = fn(&str, bool) -> Result<Vec<Counter>, (usize, String)>;

impl Nstat {
    fn line(&self, path: &Path, name: &'static str, parse: Parser) -> Result<Metric, GatherError> {
        let text = read_to_string(path)?;
        let counters =
            parse(&text, self.dump_zeros).map_err(|(l, m)| GatherError::malformed(path, l, m))?;
        let mut m = Metric::new("nstat", 0).with_tag("name", name);
        m.fields.reserve(counters.len());
        for (k, v) in counters {
            m.add_field(Cow::Owned(k), v);
        }
        Ok(m)
    }
}

impl Input for Nstat {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        // Telegraf's order: netstat is emitted before snmp is read, and a missing snmp6 (IPv6
        // disabled) is not an error.
        let stamp = |mut m: Metric, acc: &mut Accumulator| {
            m.time = acc.time();
            acc.push(m);
        };
        let m = self.line(&self.netstat, "netstat", parse_table)?;
        stamp(m, acc);
        let m = self.line(&self.snmp, "snmp", parse_table)?;
        stamp(m, acc);
        match self.line(&self.snmp6, "snmp6", parse_pairs) {
            Ok(m) => stamp(m, acc),
            Err(GatherError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 6429\nTcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab\nTcp: 1 -1 0 3\n";

    #[test]
    fn table_names_and_zeros() {
        let all = parse_table(SNMP, true).unwrap();
        assert_eq!(
            all,
            vec![
                ("IpForwarding".to_owned(), 2),
                ("IpDefaultTTL".to_owned(), 64),
                ("IpInReceives".to_owned(), 6429),
                ("TcpRtoAlgorithm".to_owned(), 1),
                ("TcpMaxConn".to_owned(), -1),
                ("TcpActiveOpens".to_owned(), 0),
                ("TcpCurrEstab".to_owned(), 3),
            ]
        );
        let nz = parse_table(SNMP, false).unwrap();
        assert_eq!(nz.len(), 6);
        assert!(!nz.iter().any(|(k, _)| k == "TcpActiveOpens"));
    }

    #[test]
    fn table_extended_prefixes_and_unparsable_values() {
        let t = "TcpExt: ListenOverflows TCPHystartTrainCwnd\nTcpExt: 5 18446744073709551615\nIpExt: InOctets\nIpExt: 134735281\n";
        let c = parse_table(t, true).unwrap();
        // A value beyond i64 is skipped, as Telegraf's ParseInt failure is.
        assert_eq!(
            c,
            vec![
                ("TcpExtListenOverflows".to_owned(), 5),
                ("IpExtInOctets".to_owned(), 134735281)
            ]
        );
    }

    #[test]
    fn table_mismatch_names_the_line() {
        let e = parse_table("Ip: A B C\nIp: 1 2\n", true).unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("2 values for 3 names"), "{}", e.1);
        assert_eq!(
            parse_table("Ip: A\nIp: 1\nTcp: A\n", true).unwrap_err().0,
            3
        );
        assert_eq!(parse_table("Ip: A\nTcp: 1\n", true).unwrap_err().0, 2);
        assert_eq!(parse_table("garbage\n1 2\n", true).unwrap_err().0, 1);
        assert!(parse_table("", true).unwrap().is_empty());
    }

    #[test]
    fn pairs() {
        let t = "Ip6InReceives                   \t1\nIp6InHdrErrors                  \t0\nIcmp6OutType133 7\n";
        assert_eq!(
            parse_pairs(t, false).unwrap(),
            vec![
                ("Ip6InReceives".to_owned(), 1),
                ("Icmp6OutType133".to_owned(), 7)
            ]
        );
        assert_eq!(parse_pairs(t, true).unwrap().len(), 3);
        assert_eq!(parse_pairs("A 1\nB\n", true).unwrap_err().0, 2);
        assert_eq!(parse_pairs("A 1 2\n", true).unwrap_err().0, 1);
    }
}
