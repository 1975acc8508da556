//! Self-healing, end to end with real processes (issue 9, "How it is verified").
//!
//! The harness gives the tests things to break and a way to reach them:
//! - [`sshd::Sshd`]: a real OpenSSH server on loopback with its own host key and a client key;
//! - [`supervisor::Supervisor`]: a tiny init that runs one service (`python3 -m http.server`,
//!   or a server that never closes connections) and a `ctl` script, the service's
//!   "systemctl", that recovery actions run to start it again;
//! - [`squatter::Squatter`]: a process that holds the service's port first;
//! - [`close_wait`]: client connections the server never closes, counted with `ss`;
//! - [`payloads::Payloads`]: shell-injection tag values and the marker file they would create.
//!
//! `harness` tests each piece on its own (starts, is observable, stops).

#![allow(dead_code)]

pub mod close_wait;
pub mod payloads;
pub mod process;
pub mod rules;
pub mod squatter;
pub mod sshd;
pub mod stack;
pub mod supervisor;

mod e2e;
mod harness;

// Shared with `benches/heal.rs`, which includes the pieces above and this file, not the tests.
mod util;
pub use util::*;
