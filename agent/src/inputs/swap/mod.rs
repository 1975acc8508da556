//! `[[inputs.swap]]`: swap space and swap traffic, from `/proc/meminfo` and `/proc/vmstat`.
//! See README.md for the schema and formulas.

use super::{BuildContext, GatherError, Input, InputSpec, for_each_key_value};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "swap",
    description: "Swap space usage and swap-in/out traffic",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// gopsutil multiplies the page counters by a hard-coded 4 KiB, whatever the page size.
const SWAP_PAGE_BYTES: u64 = 4096;

/// `SwapTotal` and `SwapFree` of `/proc/meminfo`, in bytes; a missing key is 0.
pub fn parse_meminfo_swap(text: &str) -> Result<(u64, u64), (usize, String)> {
    let [total, free] = parse_keys(text, ["SwapTotal", "SwapFree"])?;
    Ok((total.saturating_mul(1024), free.saturating_mul(1024)))
}

/// `pswpin` and `pswpout` of `/proc/vmstat`, in pages; a missing key is 0.
pub fn parse_vmstat_swap(text: &str) -> Result<(u64, u64), (usize, String)> {
    let [pin, pout] = parse_keys(text, ["pswpin", "pswpout"])?;
    Ok((pin, pout))
}

/// The numbers of `keys` in a `key value` file, in the order asked; a missing key is 0, a bad
/// number the error of its first line.
fn parse_keys<const N: usize>(text: &str, keys: [&str; N]) -> Result<[u64; N], (usize, String)> {
    let mut out = [0u64; N];
    let mut err = None;
    for_each_key_value(text, |key, value, line| {
        let Some(i) = keys.iter().position(|k| *k == key) else {
            return;
        };
        match value.parse::<u64>() {
            Ok(v) => out[i] = v,
            Err(_) => {
                err.get_or_insert((line, format!("bad number {value:?} for {key}")));
            }
        }
    });
    err.map_or(Ok(out), Err)
}

struct Swap {
    paths: HostPaths,
}

fn build(_opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Swap {
        paths: ctx.paths.clone(),
    })
}

impl Input for Swap {
    /// Both files are read before anything is emitted: as in Telegraf (gopsutil v4), a
    /// problem with either fails the whole gather.
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let (total, free) = self.paths.parse_proc("meminfo", parse_meminfo_swap)?;
        let (pin, pout) = self.paths.parse_proc("vmstat", parse_vmstat_swap)?;
        let used = total.saturating_sub(free);
        let used_percent = if total == 0 {
            0.0
        } else {
            100.0 * used as f64 / total as f64
        };
        acc.push(
            acc.metric("swap")
                .with_field("total", total)
                .with_field("used", used)
                .with_field("free", free)
                .with_field("used_percent", used_percent),
        );
        acc.push(
            acc.metric("swap")
                .with_field("in", pin.saturating_mul(SWAP_PAGE_BYTES))
                .with_field("out", pout.saturating_mul(SWAP_PAGE_BYTES)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_swap_in_bytes_and_missing_keys() {
        assert_eq!(
            parse_meminfo_swap("MemTotal: 9 kB\nSwapTotal:  4 kB\nSwapFree: 1 kB\n").unwrap(),
            (4096, 1024)
        );
        assert_eq!(parse_meminfo_swap("MemTotal: 9 kB\n").unwrap(), (0, 0));
        assert_eq!(parse_meminfo_swap("SwapFree: -1 kB\n").unwrap_err().0, 1);
    }

    #[test]
    fn vmstat_pages() {
        let t = "nr_free_pages 5\npswpin 7\npswpout 9 extra\n\npgpgin x\n";
        assert_eq!(parse_vmstat_swap(t).unwrap(), (7, 9));
        assert_eq!(parse_vmstat_swap("pswpin\n").unwrap_err().0, 1);
        assert_eq!(parse_vmstat_swap("").unwrap(), (0, 0));
    }
}
