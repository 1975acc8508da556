//! `[[inputs.interrupts]]`: hardware interrupts (`/proc/interrupts` → `interrupts`) and soft
//! interrupts (`/proc/softirqs` → `soft_interrupts`) per IRQ, per CPU as fields or (with
//! `cpu_as_tag`) as a tag — Telegraf 1.39's schema. See README.md.

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "interrupts",
    description: "Hardware and soft interrupts per IRQ and CPU",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Irq {
    pub id: String,
    pub typ: String,
    pub device: String,
    pub cpus: Vec<i64>,
}

struct Interrupts {
    paths: HostPaths,
    cpu_as_tag: bool,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Interrupts {
        paths: ctx.paths.clone(),
        cpu_as_tag: opts.bool("cpu_as_tag", false),
    })
}

/// Parses `/proc/interrupts` or `/proc/softirqs` as Telegraf does: the first line names the
/// CPUs (it must start with `CPU0`); each line whose first word ends in `:` is an IRQ with up
/// to one count per CPU (a line with a count that is not a number is skipped); after the
/// counts, a numeric IRQ has its type and device, a named one its description as the type.
pub fn parse(text: &str) -> Result<Vec<Irq>, String> {
    let mut lines = text.lines();
    // An empty file has nothing to report, and is no error (Telegraf's scanner finds no line).
    let Some(first) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<&str> = first.split_whitespace().collect();
    if header.first() != Some(&"CPU0") {
        return Err(format!(
            "expected first line to start with CPU0, but was {:?}",
            header.join(" ")
        ));
    }
    let ncpu = header.len();
    let mut irqs = Vec::new();
    'lines: for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(id) = fields.first().and_then(|f| f.strip_suffix(':')) else {
            continue;
        };
        let mut cpus = Vec::with_capacity(ncpu);
        for v in fields.iter().skip(1).take(ncpu) {
            match v.parse::<i64>() {
                Ok(n) => cpus.push(n),
                Err(_) => continue 'lines,
            }
        }
        let (mut typ, mut device) = (String::new(), String::new());
        if id.parse::<i64>().is_ok() && fields.len() >= ncpu + 2 {
            typ = fields[ncpu + 1].to_owned();
            device = fields[ncpu + 2..].join(" ");
        } else if fields.len() > ncpu {
            typ = fields[ncpu + 1..].join(" ");
        }
        irqs.push(Irq {
            id: id.to_owned(),
            typ,
            device,
            cpus,
        });
    }
    Ok(irqs)
}

impl Interrupts {
    fn report(&self, measurement: &'static str, irqs: &[Irq], acc: &mut Accumulator) {
        for irq in irqs {
            let tagged = |acc: &Accumulator| {
                acc.metric(measurement)
                    .with_tag("irq", irq.id.as_str())
                    .with_tag("type", irq.typ.as_str())
                    .with_tag("device", irq.device.as_str())
            };
            if self.cpu_as_tag {
                for (i, n) in irq.cpus.iter().enumerate() {
                    let m = tagged(acc)
                        .with_tag("cpu", format!("cpu{i}"))
                        .with_field("count", *n);
                    acc.push(m);
                }
            } else {
                // Go's int64 sum wraps; so does this one (no overflow panic).
                let total = irq.cpus.iter().fold(0i64, |a, n| a.wrapping_add(*n));
                let mut m = tagged(acc).with_field("total", total);
                for (i, n) in irq.cpus.iter().enumerate() {
                    m.add_field(format!("CPU{i}"), *n);
                }
                acc.push(m);
            }
        }
    }
}

impl Input for Interrupts {
    /// Each file on its own: one that cannot be read or parsed is an error, the other is
    /// still reported (as in Telegraf).
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut errors = Vec::new();
        for (measurement, file) in [
            ("interrupts", "interrupts"),
            ("soft_interrupts", "softirqs"),
        ] {
            let path = self.paths.proc(file);
            let irqs = self
                .paths
                .read_proc(file)
                .and_then(|t| parse(&t).map_err(|m| GatherError::malformed(&path, 1, m)));
            match irqs {
                Ok(irqs) => self.report(measurement, &irqs, acc),
                Err(e) => errors.push(e),
            }
        }
        GatherError::all(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irq(id: &str, typ: &str, device: &str, cpus: &[i64]) -> Irq {
        Irq {
            id: id.into(),
            typ: typ.into(),
            device: device.into(),
            cpus: cpus.to_vec(),
        }
    }

    /// Telegraf's own test input (tabs and spaces mixed, short rows).
    #[test]
    fn telegrafs_soft_irqs_case() {
        let text = "            CPU0       \t\tCPU1\n\
\t\t\t\t\t\t0:           134 \t    \t   0   IO-APIC-edge      timer\n\
\t\t\t\t\t\t1:   \t       7\t           3   IO-APIC-edge      i8042\n\
\t\t\t\t\t\tNMI:           0    \t   \t   0   Non-maskable interrupts\n\
\t\t\t\t\t\tLOC:  2338608687 \t  2334309625   Local timer interrupts\n\
\t\t\t\t\t\tMIS:           0\n\
\t\t\t\t\t\tNET_RX:   867028\t\t\t 225\n\
\t\t\t\t\t\tTASKLET:\t 205\t\t\t   0";
        assert_eq!(
            parse(text).unwrap(),
            [
                irq("0", "IO-APIC-edge", "timer", &[134, 0]),
                irq("1", "IO-APIC-edge", "i8042", &[7, 3]),
                irq("NMI", "Non-maskable interrupts", "", &[0, 0]),
                irq(
                    "LOC",
                    "Local timer interrupts",
                    "",
                    &[2338608687, 2334309625]
                ),
                irq("MIS", "", "", &[0]),
                irq("NET_RX", "", "", &[867028, 225]),
                irq("TASKLET", "", "", &[205, 0]),
            ]
        );
    }

    #[test]
    fn bad_header_and_odd_lines() {
        assert!(parse("cpu0 cpu1\n0: 1 2\n").is_err());
        assert!(parse("\n").is_err());
        assert_eq!(
            parse(""),
            Ok(vec![]),
            "an empty file is no error, as in Telegraf"
        );
        // A line whose counts are not numbers is skipped; blank lines too.
        let got = parse("CPU0 CPU1\n\n  5:  1  x  PCI-MSI eth0\n  6:  1  2  PCI-MSI 3-edge eth1\n")
            .unwrap();
        assert_eq!(got, [irq("6", "PCI-MSI", "3-edge eth1", &[1, 2])]);
    }
}
