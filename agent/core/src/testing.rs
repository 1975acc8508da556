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

/// A small deterministic generator (xorshift64), so that generated test data and benchmark
/// inputs are the same on every run and a failure reproduces.
#[derive(Debug, Clone)]
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next value (the seed must not be 0).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
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

/// Runs `git ARGS` in `dir` with a fixed identity and `main` as the default branch (the
/// deploy tests' repositories); fails the test when git fails.
pub fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    run_ok(
        std::process::Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(["-c", "init.defaultBranch=main"])
            .args(args),
    )
}

/// Makes `origin` a git repository of the files in it (one commit, `message`) and clones it to
/// `checkout`: the config repository and the host's checkout of the deploy tests.
pub fn git_repo_and_clone(origin: &std::path::Path, message: &str, checkout: &std::path::Path) {
    git(origin, &["init", "-q"]);
    git(origin, &["add", "-A"]);
    git(origin, &["commit", "-qm", message]);
    let clone = [
        std::ffi::OsStr::new("clone"),
        "-q".as_ref(),
        origin.as_os_str(),
    ];
    run_ok(
        std::process::Command::new("git")
            .args(clone)
            .arg(checkout)
            .current_dir(origin),
    );
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

/// `N` distinct free ports on 127.0.0.1, below the kernel's ephemeral range: a port taken
/// from that range (port 0) could be given to any test's outgoing connection as its source
/// port between our release and the server's bind ("address already in use", seen in CI).
/// Ports are never handed out twice by one test process, and each one was bound once here.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::Mutex;
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    const LOWEST: u16 = 10_000;
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = [0; N];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    let mut rng = Xorshift(seed | 1);
    let span = u64::from(first_ephemeral.saturating_sub(LOWEST));
    for p in ports.iter_mut() {
        let mut tries = 0;
        *p = loop {
            tries += 1;
            if span < 1_000 || tries > 1_000 {
                // No room below the ephemeral range: the kernel's choice.
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
                let port = l.local_addr().expect("local_addr").port();
                held.push(l);
                break port;
            }
            let port = LOWEST + (rng.next_u64() % span) as u16;
            if given.contains(&port) {
                continue;
            }
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
                break port;
            }
        };
        given.insert(*p);
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

/// Makes a self-signed certificate for 127.0.0.1 (EC P-256, not a CA) and its key in `dir`
/// with the `openssl` command; returns (cert, key) or, when openssl is missing, what
/// [`binary`] returns.
pub fn self_signed_cert(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let openssl = binary("openssl", "openssl")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        std::process::Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "1", "-subj", "/CN=wk-test"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(std::process::Stdio::null()),
    );
    Some((cert, key))
}

/// Checks `program`'s rows of docs/cli.md's exit status table (`| program | case | status |`)
/// against `cases` (case text as in the table → a run of that case): every documented case is
/// run and exits with its documented status, and every run case is documented.
pub fn assert_documented_exit_statuses(
    program: &str,
    cases: &[(&str, &dyn Fn() -> std::process::Output)],
) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let documented: Vec<(String, i32)> = doc
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            match cols.as_slice() {
                [p, case, status] if *p == program => {
                    Some((case.to_string(), status.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect();
    assert!(
        !documented.is_empty(),
        "docs/cli.md documents no exit status of {program}"
    );
    for (case, _) in cases {
        assert!(
            documented.iter().any(|(c, _)| c == case),
            "docs/cli.md does not document {program}'s case {case:?}"
        );
    }
    for (case, status) in &documented {
        let run = cases
            .iter()
            .find(|(c, _)| c == case)
            .unwrap_or_else(|| panic!("docs/cli.md's case {case:?} of {program} has no test"))
            .1;
        let out = run();
        assert_eq!(
            out.status.code(),
            Some(*status),
            "{program}: {case}: stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `bin man --dir` and, for each page (`wk-alerter-silence-add.1`), the command's
/// `--help` (`wk-alerter silence add --help`): each must succeed, and every long option the
/// help shows must be in the page; `bin completions bash` must be valid bash naming every
/// command. Returns the page names.
pub fn assert_help_man_and_completions_agree(bin: &std::path::Path) -> Vec<String> {
    let name = bin.file_name().unwrap().to_str().unwrap().to_owned();
    let dir = tempfile_dir(&name);
    let out = std::process::Command::new(bin)
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name} man: {out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert!(pages.contains(&format!("{name}.1")), "{pages:?}");
    let script = std::process::Command::new(bin)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let script_path = dir.join("completion.bash");
    std::fs::write(&script_path, &script.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script_path)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "bash -n: {syntax:?}");
    let script = String::from_utf8(script.stdout).unwrap();
    for page in &pages {
        let page_text = std::fs::read_to_string(dir.join(page))
            .unwrap()
            .replace("\\-", "-");
        let words: Vec<&str> = page
            .trim_end_matches(".1")
            .strip_prefix(&name)
            .unwrap()
            .split('-')
            .filter(|w| !w.is_empty())
            .collect();
        let help = std::process::Command::new(bin)
            .args(&words)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} {words:?} --help: {help:?}");
        let usage = format!(
            "Usage: {}",
            [name.as_str()]
                .into_iter()
                .chain(words.iter().copied())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            text.contains(&usage),
            "{name} {words:?} --help lacks {usage:?}:\n{text}"
        );
        for opt in text
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            let opt = opt.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            assert!(
                page_text.contains(opt),
                "{page} lacks {opt} (in {name} {words:?} --help)"
            );
        }
        if let Some(last) = words.last() {
            assert!(script.contains(last), "the bash completion lacks {last}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    pages
}

/// A fresh directory under the system temp dir (wk-core has no tempfile dependency outside
/// its own tests).
fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads the one table of `text` (`[x]\n…`) with `read`, as a plugin's build reads its
/// options: what `read` returned and the diagnostics' messages.
pub fn read_table<T>(
    text: &str,
    read: impl FnOnce(&mut crate::options::Options<'_, '_>) -> T,
) -> (T, Vec<String>) {
    let src = crate::diag::Source::new(std::path::Path::new("t.conf"), text.to_owned());
    let doc = toml::de::DeTable::parse(text).expect("valid TOML");
    let doc = doc.get_ref();
    let (name, value) = doc.iter().next().expect("a table");
    let toml::de::DeValue::Table(t) = value.get_ref() else {
        panic!("[{}] is not a table", name.get_ref())
    };
    let mut diags = crate::diag::Diagnostics::default();
    let no_env = |_: &str| None;
    let mut o =
        crate::options::Options::new(&src, name.get_ref().to_string(), t, 0, &mut diags, &no_env);
    let out = read(&mut o);
    o.finish();
    (out, diags.items.iter().map(|d| d.message.clone()).collect())
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
