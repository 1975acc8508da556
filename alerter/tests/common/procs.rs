//! Real processes for the recovery-action tests: a python listener holding a port, python's
//! http.server to restart, actions built from their arguments, probes polled until they say.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wk_alerter::actions::{Action, Args, Ctx, Probe};

/// Spawns `argv` with stdin, stdout and stderr on /dev/null.
pub fn spawn(argv: &[&str]) -> Child {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"))
}

/// Kills and reaps `child`.
pub fn reap(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (10 s at most) until something accepts connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) {
    wk_core::testing::wait_for(
        &format!("a listener on port {port}"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// A python listener on `port` (the "squatter" free_port stops), once it listens.
pub fn listener(port: u16) -> Child {
    let child = spawn(&[
        "python3",
        "-c",
        "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\ntime.sleep(600)",
        &port.to_string(),
    ]);
    wait_listening(port);
    child
}

/// The command line of python's web server on `port` (`port` as text).
pub fn http_server_argv(port: &str) -> [&str; 6] {
    ["python3", "-m", "http.server", "--bind", "127.0.0.1", port]
}

/// A regular expression matching the whole command line of [`http_server_argv`] (`python3`
/// may run as its full path: a pyenv shim execs the real one).
pub fn http_server_pattern(port: u16) -> String {
    format!(r"^(\S*/)?python3 -m http\.server --bind 127\.0\.0\.1 {port}$")
}

/// SIGKILLs every process whose command line matches `pattern` (what a restart started).
pub fn kill_matching(pattern: &str) {
    let re = regex::Regex::new(pattern).unwrap();
    for p in wk_alerter::actions::restart_process::matching(std::path::Path::new("/proc"), &re) {
        // SAFETY: kill(2) on a process the test's action started.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}

/// The action `name` built from its single-valued arguments `one` and list arguments `lists`.
pub fn action(name: &str, one: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Box<dyn Action> {
    let spec = wk_alerter::actions::find(name).unwrap_or_else(|| panic!("no action {name}"));
    (spec.build)(&Args {
        one: one
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        lists: lists
            .iter()
            .map(|(k, v)| ((*k).into(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
    })
}

/// Probes `a` until `done` holds of the probe or `tries` pauses of `pause` have passed (a
/// started server needs a moment, longer on a loaded machine); returns the last probe.
pub async fn probe_until(
    a: &dyn Action,
    ctx: &Ctx,
    tries: u32,
    pause: Duration,
    done: impl Fn(&Probe) -> bool,
) -> Probe {
    let mut probe = a.probe(ctx).await;
    for _ in 0..tries {
        if done(&probe) {
            break;
        }
        tokio::time::sleep(pause).await;
        probe = a.probe(ctx).await;
    }
    probe
}
