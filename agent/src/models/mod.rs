//! Generic wrappers around plugins: filters, naming, tags, buffering.

pub mod disk_buffer;
pub mod error_log;
pub mod filter;
pub mod running_input;
pub mod running_output;

use crate::metric::Metric;
use wk_core::options::Options;

/// `name_override`, `name_prefix`, `name_suffix`: the renaming both inputs and outputs apply.
#[derive(Debug, Clone, Default)]
struct Rename {
    name_override: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
}

impl Rename {
    fn from_options(opts: &mut Options<'_, '_>) -> Rename {
        Rename {
            name_override: opts.opt_string("name_override"),
            name_prefix: opts.opt_string("name_prefix"),
            name_suffix: opts.opt_string("name_suffix"),
        }
    }

    /// Telegraf's order: the override, then prefix and suffix around it.
    fn apply(&self, m: &mut Metric) {
        if let Some(n) = &self.name_override {
            m.name = n.clone().into();
        }
        if self.name_prefix.is_some() || self.name_suffix.is_some() {
            let prefix = self.name_prefix.as_deref().unwrap_or("");
            let suffix = self.name_suffix.as_deref().unwrap_or("");
            m.name = format!("{prefix}{}{suffix}", m.name).into();
        }
    }
}

/// A plugin instance as logs name it: `inputs.cpu`, or `inputs.cpu::<alias>` (Telegraf's form).
fn log_name(kind: &str, name: &str, alias: Option<&str>) -> String {
    match alias {
        Some(a) => format!("{kind}.{name}::{a}"),
        None => format!("{kind}.{name}"),
    }
}
