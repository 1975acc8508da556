//! A child process that is reaped as soon as it exits (a thread waits on it), so that a
//! process killed by someone else — a recovery action — is gone, not a zombie that still
//! "holds" its pid; killed (with its process group) when dropped.

use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use std::os::unix::process::CommandExt;

/// A spawned child and its exit status once reaped.
pub struct Spawned {
    pid: i32,
    /// Whether the child leads its own process group (kills go to the whole group).
    group: bool,
    status: Arc<(Mutex<Option<ExitStatus>>, Condvar)>,
}

impl Spawned {
    /// Spawns `cmd`; with `group` the child gets its own process group.
    pub fn spawn(cmd: &mut Command, group: bool) -> std::io::Result<Spawned> {
        if group {
            cmd.process_group(0);
        }
        let mut child: Child = cmd.spawn()?;
        let pid = child.id() as i32;
        let status = Arc::new((Mutex::new(None), Condvar::new()));
        let st = status.clone();
        std::thread::spawn(move || {
            let s = child.wait().ok();
            let (lock, cv) = &*st;
            *lock.lock().unwrap() = s;
            cv.notify_all();
        });
        Ok(Spawned { pid, group, status })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit status, once the child has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.status.0.lock().unwrap()
    }

    /// Sends `sig` to the child (its group when it leads one) unless it has exited.
    pub fn signal(&self, sig: i32) {
        let guard = self.status.0.lock().unwrap();
        if guard.is_none() {
            let target = if self.group { -self.pid } else { self.pid };
            // SAFETY: kill(2) on our own child (or its group), not yet reaped: the pid is ours.
            unsafe { libc::kill(target, sig) };
        }
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let (lock, cv) = &*self.status;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |s| s.is_none())
            .unwrap();
        *guard
    }

    /// SIGKILL (the group) and wait until reaped.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
