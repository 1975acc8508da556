//! Generic wrappers around plugins: filters, naming, tags, buffering.

pub mod disk_buffer;
pub mod error_log;
pub mod filter;
pub mod running_input;
pub mod running_output;
