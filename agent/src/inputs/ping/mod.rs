//! `[[inputs.ping]]`: ICMP echo round-trip statistics per URL, by running the system `ping`
//! binary (Telegraf's default `method = "exec"`) with Telegraf's Linux arguments and parsing its
//! summary. URLs are pinged concurrently, one thread and one child process each; the child is
//! never run through a shell. See README.md for the schema.

use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::common::command::{Run, run};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "ping",
    description: "ICMP echo (ping) round-trip times and packet loss, via the ping binary",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// The smallest interval between packets ping accepts for unprivileged users.
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Telegraf kills the ping process after 60 s + 5 s; we use this when no `-w` deadline is
/// passed (none set, or `arguments` given).
const NO_DEADLINE_LIMIT: Duration = Duration::from_secs(65);
/// Extra time the child gets beyond `deadline` before we kill it.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// Round-trip statistics of one summary line (`min/avg/max[/mdev|stddev] = …`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// iputils' `mdev`, inetutils' `stddev`; busybox prints none.
    pub stddev: Option<f64>,
}

/// What the output of one ping run says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    pub transmitted: i64,
    pub received: i64,
    /// The first reply's `ttl=` (or BSD's `hlim=`); absent without replies.
    pub ttl: Option<i64>,
    /// Absent when nothing was received (ping prints no rtt line then).
    pub rtt: Option<Rtt>,
}

/// Parses the output of iputils, busybox or inetutils `ping` (stdout and stderr together).
/// The `N packets transmitted, M [packets] received` line is required; a malformed statistics
/// or rtt line is an error naming its 1-based line number.
pub fn parse_ping_output(text: &str) -> Result<PingStats, (usize, String)> {
    let mut counts = None;
    let mut ttl = None;
    let mut rtt = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if ttl.is_none() && (line.contains("ttl=") || line.contains("hlim=")) {
            // Like Telegraf: only the first reply's TTL; a line we cannot read is skipped.
            ttl = parse_ttl(line);
        } else if line.contains("transmitted") && line.contains("received") {
            counts =
                Some(parse_counts(line).ok_or_else(|| {
                    (n, format!("unreadable packet statistics {:?}", line.trim()))
                })?);
        } else if line.contains("min/avg/max") {
            rtt = Some(
                parse_rtt(line)
                    .ok_or_else(|| (n, format!("unreadable round-trip line {:?}", line.trim())))?,
            );
        }
    }
    let Some((transmitted, received)) = counts else {
        return Err((
            0,
            "no \"packets transmitted\" line in ping output".to_owned(),
        ));
    };
    Ok(PingStats {
        transmitted,
        received,
        ttl,
        rtt,
    })
}

/// `… ttl=64 …` or `… hlim=64 …` → 64.
fn parse_ttl(line: &str) -> Option<i64> {
    let at = line
        .find("ttl=")
        .map(|p| p + 4)
        .or_else(|| line.find("hlim=").map(|p| p + 5))?;
    let rest = line.get(at..)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest.get(..end)?.parse().ok()
}

/// `3 packets transmitted, 2 received, 33% packet loss, time 2003ms` → (3, 2); busybox and
/// inetutils say `2 packets received`.
fn parse_counts(line: &str) -> Option<(i64, i64)> {
    let mut parts = line.trim().split(", ");
    let trans = parts.next()?.split(' ').next()?.parse().ok()?;
    let recv = parts.next()?.split(' ').next()?.parse().ok()?;
    Some((trans, recv))
}

/// `rtt min/avg/max/mdev = 0.041/0.045/0.050/0.004 ms` (busybox: three values).
fn parse_rtt(line: &str) -> Option<Rtt> {
    let (_, values) = line.split_once(" = ")?;
    let values = values.trim().split(' ').next()?;
    let mut it = values.split('/');
    let mut next = || -> Option<f64> { it.next()?.parse().ok() };
    let (min, avg, max) = (next()?, next()?, next()?);
    let stddev = next();
    Some(Rtt {
        min,
        avg,
        max,
        stddev,
    })
}

/// The argv (without the binary) Telegraf passes on Linux for `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecArgs {
    pub count: i64,
    pub interval: Duration,
    /// Zero: `-W` not passed.
    pub timeout: Duration,
    /// Zero: `-w` not passed.
    pub deadline: Duration,
    pub interface: Option<String>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// When non-empty, replaces every generated argument (the URL is still appended).
    pub arguments: Vec<String>,
}

/// Seconds the way Go's `FormatFloat(f, 'f', -1, 64)` prints them: `1`, `0.2`, `1.5`.
fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

impl ExecArgs {
    /// `-c <count> -n -s 16 -i <interval> [-W <timeout>] [-w <deadline>] [-I <iface>] [-4|-6]
    /// <url>`, or `arguments` followed by `<url>`.
    pub fn argv(&self, url: &str) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if !self.arguments.is_empty() {
            a.extend(self.arguments.iter().cloned());
            a.push(url.to_owned());
            return a;
        }
        a.extend(["-c".into(), self.count.to_string(), "-n".into()]);
        a.extend(["-s".into(), "16".into()]);
        if !self.interval.is_zero() {
            a.extend(["-i".into(), secs(self.interval)]);
        }
        if !self.timeout.is_zero() {
            a.extend(["-W".into(), secs(self.timeout)]);
        }
        if !self.deadline.is_zero() {
            // Telegraf's deadline is a whole number of seconds, truncated.
            a.extend(["-w".into(), self.deadline.as_secs().to_string()]);
        }
        if let Some(iface) = &self.interface {
            a.extend(["-I".into(), iface.clone()]);
        }
        if self.ipv4 {
            a.push("-4".into());
        }
        if self.ipv6 {
            a.push("-6".into());
        }
        a.push(url.to_owned());
        a
    }
}

/// The fields of one URL's metric, in Telegraf's order of assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result_code: i64,
    pub stats: Option<PingStats>,
    /// Telegraf's `errors = 100.0` when the output could not be parsed.
    pub parse_failed: bool,
    /// A message for `acc.add_error`.
    pub error: Option<String>,
}

/// Telegraf's exec logic for one finished run: exit 0 → parse; exit 1 (iputils: no reply)
/// → result_code 1 and parse anyway; anything else → result_code 2 and nothing else.
fn outcome(url: &str, run: Run) -> Outcome {
    let (code, out) = match run {
        // Both streams, as Telegraf's CombinedOutput: an unknown host is reported on stderr.
        Run::Exited {
            code,
            stdout,
            stderr,
        } => (code, stdout + &stderr),
        Run::Failed(e) => {
            return Outcome {
                result_code: 2,
                stats: None,
                parse_failed: false,
                error: Some(format!("host {url:?}: {e}")),
            };
        }
    };
    if code != 0 && code != 1 {
        let out = out.trim();
        let msg = if out.is_empty() {
            format!("host {url:?}: exit status {code}")
        } else {
            format!("host {url:?}: exit status {code} - {out}")
        };
        return Outcome {
            result_code: 2,
            stats: None,
            parse_failed: false,
            error: Some(msg),
        };
    }
    match parse_ping_output(&out) {
        Ok(stats) => Outcome {
            result_code: code.into(),
            stats: Some(stats),
            parse_failed: false,
            error: None,
        },
        Err((line, msg)) => Outcome {
            result_code: code.into(),
            stats: None,
            parse_failed: true,
            error: Some(format!("{url:?}: line {line}: {msg}")),
        },
    }
}

struct Ping {
    urls: Vec<String>,
    binary: String,
    args: ExecArgs,
    limit: Duration,
}

impl Input for Ping {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let results: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .urls
                .iter()
                .map(|url| {
                    let argv = self.args.argv(url);
                    let (binary, limit) = (&self.binary, self.limit);
                    s.spawn(move || outcome(url, run(binary, &argv, limit)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or(Outcome {
                        result_code: 2,
                        stats: None,
                        parse_failed: false,
                        error: Some("ping thread panicked".to_owned()),
                    })
                })
                .collect()
        });
        for (url, o) in self.urls.iter().zip(results) {
            if let Some(e) = &o.error {
                acc.add_error(e.as_str());
            }
            acc.push(metric(acc, url, &o));
        }
        Ok(())
    }
}

/// The `ping` metric of one outcome.
fn metric(acc: &Accumulator, url: &str, o: &Outcome) -> crate::metric::Metric {
    let mut m = acc.metric("ping").with_tag("url", url);
    m.add_field("result_code", o.result_code);
    if o.parse_failed {
        m.add_field("errors", 100.0);
    }
    if let Some(s) = &o.stats {
        m.add_field("packets_transmitted", s.transmitted);
        m.add_field("packets_received", s.received);
        if s.transmitted > 0 {
            let loss = (s.transmitted - s.received) as f64 / s.transmitted as f64 * 100.0;
            m.add_field("percent_packet_loss", loss);
        }
        if let Some(ttl) = s.ttl {
            m.add_field("ttl", ttl);
        }
        if let Some(r) = &s.rtt {
            m.add_field("minimum_response_ms", r.min);
            m.add_field("average_response_ms", r.avg);
            m.add_field("maximum_response_ms", r.max);
            if let Some(sd) = r.stddev {
                m.add_field("standard_deviation_ms", sd);
            }
        }
    }
    m
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let urls = opts.strings("urls");
    for u in &urls {
        if u.starts_with('-') || u.is_empty() {
            opts.error_at(
                "urls",
                format!("invalid url {u:?}: must not be empty or start with '-'"),
            );
        }
    }
    let method = opts.choice("method", "exec", &["exec", "native"]);
    if method == "native" {
        opts.warn_at(
            "method",
            "\"native\" is not implemented by wk-agent; the ping binary is used (method = \"exec\")",
        );
    }
    let count = opts.int("count", 1, 1, i64::from(i32::MAX));
    let mut interval = opts.duration("ping_interval", Duration::from_secs(1));
    if interval < MIN_INTERVAL {
        opts.warn_at("ping_interval", "below the minimum of 0.2 s; 0.2 s is used");
        interval = MIN_INTERVAL;
    }
    let timeout = opts.duration("timeout", Duration::from_secs(1));
    let deadline = opts.duration("deadline", Duration::from_secs(10));
    let interface = opts.opt_string("interface").filter(|s| !s.is_empty());
    if interface.as_deref().is_some_and(|s| s.starts_with('-')) {
        opts.error_at("interface", "must not start with '-'");
    }
    // Telegraf applies ipv4/ipv6 to the native method only (both = either family); the exec
    // method ignores them. With `native` (run through the binary here) they become -4/-6.
    let ipv4 = opts.bool("ipv4", false);
    let ipv6 = opts.bool("ipv6", false);
    let (ipv4, ipv6) = if method == "native" && ipv4 != ipv6 {
        (ipv4, ipv6)
    } else {
        (false, false)
    };
    let binary = opts.string("binary", "ping");
    if binary.is_empty() {
        opts.error_at("binary", "must not be empty");
    }
    let arguments = opts.strings("arguments");
    // Options of the native method: accepted, without effect on exec.
    for key in ["percentiles", "privileged", "size"] {
        if opts.has(key) {
            opts.warn_at(key, "only used by method = \"native\"; ignored");
        }
    }
    // deadline + 5 s only when our own `-w` ends ping by then; `arguments` replace it.
    let limit = if deadline.is_zero() || !arguments.is_empty() {
        NO_DEADLINE_LIMIT
    } else {
        deadline + DEADLINE_SLACK
    };
    Box::new(Ping {
        urls,
        binary,
        args: ExecArgs {
            count,
            interval,
            timeout,
            deadline,
            interface,
            ipv4,
            ipv6,
            arguments,
        },
        limit,
    })
}

#[cfg(test)]
mod tests;
