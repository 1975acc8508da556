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
pub mod squatter;
pub mod sshd;
pub mod stack;
pub mod supervisor;

mod e2e;
mod harness;

/// Debian's python3 (the one with aiosmtpd); never a pyenv shim on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

/// True when `path` exists; otherwise fails the test naming the Debian package, or returns
/// false (skip, printed) when WK_SKIP_SERVERS=1.
pub fn require(path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    wk_core::testing::missing_server(path, package).is_some()
}

/// The processes listening on TCP `port` (oracle: /proc via wk-core, not the code under test).
pub fn listeners(port: u16) -> Vec<wk_core::procs::Process> {
    wk_core::procs::tcp_port_holders(std::path::Path::new("/proc"), port)
}

/// Whether `pid` is a live process (a zombie counts as gone: init here does not reap).
pub fn alive(pid: i32) -> bool {
    wk_core::procs::get(std::path::Path::new("/proc"), pid).is_some_and(|p| p.state != 'Z')
}

/// The user name of `uid` from /etc/passwd, or the number.
pub fn user_name(uid: u32) -> String {
    wk_core::procs::user_names(std::path::Path::new("/etc/passwd"))
        .remove(&uid)
        .unwrap_or_else(|| uid.to_string())
}
