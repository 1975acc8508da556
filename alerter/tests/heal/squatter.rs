//! A process that holds a port first, so the service that should listen there cannot
//! start ("address already in use"). The test knows who it is — command, pid, user — to
//! compare with what a recovery action reports.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::Spawned;
use super::{PYTHON, alive, listeners};
use crate::common::wait::wait_for;

/// Binds 127.0.0.1:argv[1] and sleeps; SIGTERM ends it (Python's default handler).
const SQUAT: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.listen(16)
while True:
    time.sleep(3600)
"#;

pub struct Squatter {
    proc: Spawned,
    pub port: u16,
}

impl Squatter {
    /// Starts the squatter on `port` and waits until it listens there.
    pub fn start(port: u16) -> Squatter {
        let proc = Spawned::spawn(
            Command::new(PYTHON)
                .args(["-c", SQUAT, &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            false,
        )
        .expect("start squatter");
        let pid = proc.pid();
        wait_for(
            &format!("the squatter (pid {pid}) to listen on {port}"),
            Duration::from_secs(10),
            || listeners(port).iter().any(|p| p.pid == pid),
        );
        Squatter { proc, port }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The user it runs as (the test's user).
    pub fn user(&self) -> String {
        super::sshd::current_user()
    }

    /// Its command line as /proc shows it (`/usr/bin/python3 -c import socket…`).
    pub fn command(&self) -> String {
        wk_core::procs::get(std::path::Path::new("/proc"), self.pid())
            .map(|p| p.command())
            .unwrap_or_default()
    }

    /// Whether it still runs (a recovery action may have stopped it).
    pub fn alive(&self) -> bool {
        self.proc.exited().is_none() && alive(self.pid())
    }

    /// How it ended, once it has (SIGTERM from `free_port`, SIGKILL…).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.proc.exited()
    }
}
