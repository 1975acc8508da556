//! CLOSE_WAIT pile-ups: clients that connect to a server that never closes its side
//! ([`super::supervisor::Supervisor::close_wait`]) and then close theirs; counted per owning
//! process with `ss` (the outside oracle, iproute2).

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::wait::wait_for;

/// Opens `n` connections to loopback `port`, waits until the server has accepted them all
/// (they are ESTABLISHED in its fd table), then closes them: the server's ends go to
/// CLOSE_WAIT and stay there.
pub fn open_and_close(port: u16, server_pid: i32, n: usize) {
    let before = count(port, server_pid, "established");
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    wait_for(
        &format!("pid {server_pid} to accept {n} connections"),
        Duration::from_secs(10),
        || count(port, server_pid, "established") >= before + n,
    );
    drop(conns);
}

/// Sockets on local `port` in `state` (an `ss` state name: established, close-wait…)
/// held by `pid`, as `ss -tanp` reports them.
pub fn count(port: u16, pid: i32, state: &str) -> usize {
    let out = wk_core::testing::run_ok(
        Command::new("ss")
            .args(["-H", "-t", "-a", "-n", "-p", "state", state])
            .arg(format!("sport = :{port}")),
    );
    let needle = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// CLOSE_WAIT sockets on `port` held by `pid`.
pub fn close_wait(port: u16, pid: i32) -> usize {
    count(port, pid, "close-wait")
}
