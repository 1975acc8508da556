//! Small helpers of the healing harness (the test modules reach them as `super::…`).

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
