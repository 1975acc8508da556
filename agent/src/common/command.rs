//! Running a helper program without a shell: argv only, stdin closed, both pipes drained on
//! their own threads (a chatty child never blocks on a full pipe), killed after a time limit
//! with its whole process group (a wrapper script's children would otherwise keep the pipes
//! open, and the read waiting, past the limit), in the C locale (the output is parsed: a
//! translated ping summary would parse as nothing).

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The process groups of the helpers running now: a gather abandoned at a stop leaves its
/// helper behind, and [`kill_running`] ends them at exit.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs the helpers still running (at exit: a gather that hung was abandoned, its helper
/// would outlive the agent).
pub fn kill_running() {
    let groups = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(PoisonError::into_inner));
    for g in groups {
        kill_group(g);
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Exited with a status code.
    Exited {
        code: i32,
        stdout: String,
        stderr: String,
    },
    /// Could not start, was killed by a signal, or ran past the limit.
    Failed(String),
}

/// Runs `binary argv…`, killing it after `limit`.
pub fn run(binary: &str, argv: &[impl AsRef<OsStr>], limit: Duration) -> Run {
    use std::os::unix::process::CommandExt;
    let mut child = match Command::new(binary)
        .args(argv)
        .env("LC_ALL", "C")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Run::Failed(format!("cannot run {binary:?}: {e}")),
    };
    let pgid = child.id();
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pgid);
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= limit => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{binary:?} killed after {} s", limit.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("waiting for {binary:?}: {e}"));
            }
        }
    };
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|g| *g != pgid);
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Ok(st) => match st.code() {
            Some(code) => Run::Exited {
                code,
                stdout,
                stderr,
            },
            None => Run::Failed(format!("{binary:?}: {st}: {}", stderr.trim())),
        },
        Err(e) => Run::Failed(e),
    }
}

/// SIGKILLs the process group `pgid` (the child and whatever it started).
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals the group the child leads (it was started
    // with process_group(0), so its pid is the group id); no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pipes_and_limits() {
        match run(
            "ls",
            &["-d", "/", "/nonexistent-wk"],
            Duration::from_secs(5),
        ) {
            Run::Exited {
                code,
                stdout,
                stderr,
            } => {
                assert_eq!((code, stdout.as_str()), (2, "/\n"));
                assert!(stderr.contains("nonexistent-wk"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        let start = Instant::now();
        assert!(matches!(
            run("sleep", &["10"], Duration::from_millis(100)),
            Run::Failed(e) if e.contains("killed")
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
        // A wrapper whose child keeps the pipes open: the whole group goes at the limit.
        let start = Instant::now();
        assert!(matches!(
            run("sh", &["-c", "sleep 30; :"], Duration::from_millis(200)),
            Run::Failed(e) if e.contains("killed")
        ));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        match run("sh", &["-c", "echo $LC_ALL"], Duration::from_secs(5)) {
            Run::Exited { stdout, .. } => assert_eq!(stdout, "C\n"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("/nonexistent/prog", &[] as &[&str], Duration::from_secs(1)),
            Run::Failed(e) if e.contains("cannot run")
        ));
    }
}
