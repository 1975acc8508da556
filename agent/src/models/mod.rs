//! Generic wrappers around plugins: filters, naming, tags, buffering.

pub mod disk_buffer;
pub mod error_log;
pub mod filter;
pub mod running_input;
pub mod running_output;

/// A plugin instance as logs name it: `inputs.cpu`, or `inputs.cpu::<alias>` (Telegraf's form).
fn log_name(kind: &str, name: &str, alias: Option<&str>) -> String {
    match alias {
        Some(a) => format!("{kind}.{name}::{a}"),
        None => format!("{kind}.{name}"),
    }
}
