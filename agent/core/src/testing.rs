//! Test support shared by both programs' test suites: one way to skip a test, counted, that
//! cannot hide a missing dependency in CI; polling for a condition; running a helper command
//! that must succeed; a child process that cannot outlive its test.
//!
//! A test that cannot run here (a tool or kernel feature is missing) calls
//! [`skip!`](crate::skip) with the reason. It prints `SKIPPED: <test>: <reason>` and appends
//! that line to the file named by `WK_TEST_SKIP_LOG` (scripts/test counts them in its closing
//! line); when `WK_TEST_ALL_DEPS=1` (scripts/test sets it once every package it needs is
//! installed) a skip is a failure instead.

use std::io::Write;

/// Records a skip of `test` (see the module docs); panics when `WK_TEST_ALL_DEPS=1`.
pub fn skipped(test: &str, reason: &str) {
    if std::env::var("WK_TEST_ALL_DEPS").as_deref() == Ok("1") {
        panic!("SKIPPED: {test}: {reason} (WK_TEST_ALL_DEPS=1 says every dependency is installed)");
    }
    log_skip(test, reason);
}

/// Records a skip for what no package can bring to this kind of machine (a Docker daemon,
/// systemd as PID 1): counted and listed by scripts/test like any skip, but not a failure
/// under `WK_TEST_ALL_DEPS=1`. Use [`skip_platform!`](crate::skip_platform) only for that.
pub fn skipped_platform(test: &str, reason: &str) {
    log_skip(
        test,
        &format!("{reason} (not available on this machine kind)"),
    );
}

fn log_skip(test: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("WK_TEST_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Skips the calling test: records the reason with [`skipped`] and returns from the test
/// function. Takes `format!` arguments.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::testing::skipped(module_path!(), &format!($($arg)*));
        return;
    }};
}

/// Skips the calling test for a missing platform service (see [`skipped_platform`]).
#[macro_export]
macro_rules! skip_platform {
    ($($arg:tt)*) => {{
        $crate::testing::skipped_platform(module_path!(), &format!($($arg)*));
        return;
    }};
}

/// The skip decision for a missing server binary: `None` (the test then returns) only when
/// `WK_SKIP_SERVERS=1`, recorded as a skip; otherwise a panic naming the package to install.
pub fn missing_server(name: &str, package: &str) -> Option<std::convert::Infallible> {
    if std::env::var("WK_SKIP_SERVERS").as_deref() == Ok("1") {
        skipped(
            name,
            &format!("not installed (Debian package {package}) and WK_SKIP_SERVERS=1"),
        );
        return None;
    }
    panic!(
        "{name} is not installed: `apt-get install -y {package}` (scripts/test does it), \
         or set WK_SKIP_SERVERS=1 to skip the tests that need it"
    );
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`poll_until`], failing the test with `what` when `timeout` passes.
pub fn wait_for(what: &str, timeout: std::time::Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Runs `cmd` to completion and returns its output; fails the test, showing its stderr, when
/// it cannot start or does not exit with status 0.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process (a server a test started) killed and reaped when dropped, so a failing
/// test leaves nothing running. Derefs to the [`Child`](std::process::Child).
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Polls `ready` every 50 ms until it holds. Fails the test, showing `log()`, when the
    /// child exits first or `timeout` passes; `what` names the child in the message.
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        mut ready: impl FnMut() -> bool,
        log: impl Fn() -> String,
    ) {
        let start = std::time::Instant::now();
        while !ready() {
            if let Ok(Some(exit)) = self.0.try_wait() {
                panic!("{what} exited with {exit}; log:\n{}", log());
            }
            assert!(
                start.elapsed() < timeout,
                "{what} not ready within {timeout:?}; log:\n{}",
                log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1 (bound, read, released: the server binds it right after).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports (all held until every one is chosen, so none repeats).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().expect("local_addr").port();
    }
    ports
}

/// Finds the server program `name` on PATH or in /usr/bin and /usr/sbin; `None` (the test
/// returns early) only when WK_SKIP_SERVERS=1, else a panic naming the package to install.
pub fn binary(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(p);
    }
    missing_server(name, package).map(|never| match never {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_logged_and_counted() {
        // The environment is process-wide: this test only runs the logging path when the
        // suite did not ask skips to fail.
        if std::env::var("WK_TEST_ALL_DEPS").as_deref() == Ok("1") {
            let r = std::panic::catch_unwind(|| skipped("t", "no tool"));
            assert!(r.is_err(), "WK_TEST_ALL_DEPS=1 makes a skip fail");
            return;
        }
        skipped("wk_core::testing::tests", "a demonstration skip");
    }
}
