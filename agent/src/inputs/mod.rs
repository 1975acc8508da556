//! Inputs: one folder per Telegraf input plugin, named like the plugin, each with its code,
//! `README.md`, `sample.conf` and `testdata/`. The registry below is the only place that lists
//! them: adding an input is copying a folder and adding one line.

use crate::plugin::Accumulator;
use wk_core::options::Options;

pub use crate::error::GatherError;
pub use crate::plugin::BuildContext;

pub mod conntrack;
pub mod cpu;
pub mod disk;
pub mod diskio;
pub mod docker;
pub mod haproxy;
pub mod http_response;
pub mod internal;
pub mod interrupts;
pub mod kernel;
pub mod linux_sysctl_fs;
pub mod mem;
pub mod net;
pub mod net_response;
pub mod netstat;
pub mod nginx;
pub mod nstat;
pub mod ping;
pub mod processes;
pub mod procstat;
pub mod swap;
pub mod system;
pub mod systemd_units;
pub mod vip;

/// An input plugin: built from its validated options (no I/O there), then gathered once per
/// interval. It owns whatever previous sample it needs for rates.
pub trait Input: Send {
    /// Gathers one sample into `acc`. Problems that leave part of the sample usable go to
    /// `acc.add_error`; an `Err` means nothing useful was gathered.
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError>;
}

/// A constructor from options.
pub type BuildFn = fn(&mut Options<'_, '_>, &BuildContext<'_>) -> Box<dyn Input>;

/// One registry entry.
pub struct InputSpec {
    /// The plugin name: `[[inputs.<name>]]`, the folder name.
    pub name: &'static str,
    /// One line saying what the input measures.
    pub description: &'static str,
    /// The plugin's `sample.conf`, printed by `--sample-config`.
    pub sample_config: &'static str,
    /// Builds the input; errors go to the options' diagnostics.
    pub build: BuildFn,
    /// `--test` gathers twice, 500 ms apart, so that rate fields appear (Telegraf does this for
    /// `cpu`; we also do it for the other inputs whose fields need a previous sample).
    pub test_twice: bool,
}

/// Every input, one line each.
pub static REGISTRY: &[InputSpec] = &[
    conntrack::SPEC,
    cpu::SPEC,
    disk::SPEC,
    diskio::SPEC,
    docker::SPEC,
    haproxy::SPEC,
    http_response::SPEC,
    internal::SPEC,
    interrupts::SPEC,
    kernel::SPEC,
    linux_sysctl_fs::SPEC,
    mem::SPEC,
    net::SPEC,
    net_response::SPEC,
    netstat::SPEC,
    nginx::SPEC,
    nstat::SPEC,
    ping::SPEC,
    processes::SPEC,
    procstat::SPEC,
    swap::SPEC,
    system::SPEC,
    systemd_units::SPEC,
    vip::SPEC,
];

/// The registry entry of an input.
pub fn find(name: &str) -> Option<&'static InputSpec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// Parses `key  value` style lines (`/proc/meminfo`, `/proc/vmstat`, `/proc/stat`) calling
/// `f(key, first_value_column, line_number)` for each non-empty line. Keys keep their trailing
/// `:` stripped.
pub fn for_each_key_value<'t>(text: &'t str, mut f: impl FnMut(&'t str, &'t str, usize)) {
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        let Some(key) = parts.next() else { continue };
        let value = parts.next().unwrap_or("");
        f(key.trim_end_matches(':'), value, i + 1);
    }
}
