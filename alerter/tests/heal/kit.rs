//! The healing harness without its tests, for `benches/heal.rs` (the tests use `mod.rs`).
//! Paths are relative to this file's directory.

#![allow(dead_code)]

#[path = "close_wait.rs"]
pub mod close_wait;
#[path = "process.rs"]
pub mod process;
#[path = "rules.rs"]
pub mod rules;
#[path = "squatter.rs"]
pub mod squatter;
#[path = "sshd.rs"]
pub mod sshd;
#[path = "stack.rs"]
pub mod stack;
#[path = "supervisor.rs"]
pub mod supervisor;
#[path = "util.rs"]
mod util;
pub use util::*;
