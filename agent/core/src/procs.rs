//! The host's processes and who owns which socket, read from /proc with the `procfs` crate.
//!
//! Both programs need this: the agent's `procstat` input (per-process metrics, TCP states per
//! owning process) and the alerter's recovery actions that look at the host right now (who
//! holds a port, top processes). Every reader takes the proc root (`/proc`, or `HOST_PROC` in
//! a container) as a value. Processes that exit while being read are skipped, never an error.

use std::collections::HashMap;
use std::path::Path;

use procfs::process::{FDTarget, Process as ProcfsProcess};

/// One process as read from `/proc/<pid>/{stat,cmdline}` and the owner of `/proc/<pid>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// The kernel's short name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The argument vector; empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    /// Real user id (the owner of `/proc/<pid>`).
    pub uid: u32,
    /// State letter: R, S, D, Z, T, …
    pub state: char,
    /// User + system CPU time in clock ticks (see [`ticks_per_second`]).
    pub cpu_ticks: u64,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    pub rss_bytes: u64,
    pub vms_bytes: u64,
    pub num_threads: i64,
}

impl Process {
    /// The command line joined with spaces, or `[comm]` when there is none (kernel threads).
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.cmdline.join(" ")
        }
    }
}

/// Errors reading the process table itself (not a single vanished process).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ProcsError {
    pub path: String,
    #[source]
    pub source: procfs::ProcError,
}

/// Telegraf's process name (procstat's `process_name` tag): `comm`, or the basename of
/// argv[0] when comm was cut at 15 bytes and argv[0]'s basename starts with it.
pub fn process_name(comm: &str, cmdline: &[String]) -> String {
    if comm.len() >= 15
        && let Some(base) = cmdline
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|b| b.to_string_lossy().into_owned())
        && base.starts_with(comm)
    {
        return base;
    }
    comm.to_owned()
}

fn read_one(p: &ProcfsProcess) -> Option<Process> {
    let stat = p.stat().ok()?;
    let page = procfs::page_size();
    Some(Process {
        pid: stat.pid,
        ppid: stat.ppid,
        comm: stat.comm.clone(),
        cmdline: p.cmdline().unwrap_or_default(),
        uid: p.uid().unwrap_or(u32::MAX),
        state: stat.state,
        cpu_ticks: stat.utime + stat.stime,
        start_ticks: stat.starttime,
        rss_bytes: stat.rss.saturating_mul(page),
        vms_bytes: stat.vsize,
        num_threads: stat.num_threads,
    })
}

/// Every process under `proc_root`, in pid order.
pub fn list(proc_root: &Path) -> Result<Vec<Process>, ProcsError> {
    let iter =
        procfs::process::all_processes_with_root(proc_root).map_err(|source| ProcsError {
            path: proc_root.display().to_string(),
            source,
        })?;
    let mut out: Vec<Process> = iter
        .filter_map(Result::ok)
        .filter_map(|p| read_one(&p))
        .collect();
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

/// One process by pid, or None when it does not exist (any more).
pub fn get(proc_root: &Path, pid: i32) -> Option<Process> {
    let p = ProcfsProcess::new_with_root(proc_root.join(pid.to_string())).ok()?;
    read_one(&p)
}

/// Socket inodes open in one process (`/proc/<pid>/fd/* -> socket:[inode]`), one entry per fd.
/// An error when the fd table cannot be read (another user's process when not root, or the
/// process is gone): "no sockets" and "cannot tell" must stay apart for the callers.
pub fn socket_inodes(proc_root: &Path, pid: i32) -> Result<Vec<u64>, ProcsError> {
    let dir = proc_root.join(pid.to_string());
    let err = |source| ProcsError {
        path: dir.join("fd").display().to_string(),
        source,
    };
    let p = ProcfsProcess::new_with_root(dir.clone()).map_err(err)?;
    let fds = p.fd().map_err(err)?;
    // An fd closed between readdir and readlink is skipped: it is gone, not unreadable.
    Ok(fds
        .filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect())
}

/// Socket inode → the pids holding it, over every process: one fresh walk of every fd table
/// (readdir and one readlink per fd, [`crate::sockmap::for_each_socket_fd`]). Processes
/// whose fds cannot be read (another user's, when not root) are left out.
pub fn socket_owners(proc_root: &Path) -> HashMap<u64, Vec<i32>> {
    let mut map: HashMap<u64, Vec<i32>> = HashMap::new();
    crate::sockmap::for_each_socket_fd(proc_root, |pid, _, inode| {
        let pids = map.entry(inode).or_default();
        if pids.last() != Some(&pid) {
            pids.push(pid);
        }
    });
    map
}

/// Inodes of TCP sockets (v4 and v6) listening on `port`, from `<proc_root>/self/net/tcp{,6}`
/// (the network namespace of this process).
pub fn tcp_listener_inodes(proc_root: &Path, port: u16) -> Vec<u64> {
    let Ok(me) = ProcfsProcess::new_with_root(proc_root.join("self")) else {
        return Vec::new();
    };
    let v4 = me.tcp().unwrap_or_default();
    let v6 = me.tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .filter(|e| e.state == procfs::net::TcpState::Listen && e.local_address.port() == port)
        .map(|e| e.inode)
        .collect()
}

/// The processes holding a TCP socket that listens on `port`, in pid order, from a fresh walk
/// (never a kept map: recovery actions stop what this returns).
pub fn tcp_port_holders(proc_root: &Path, port: u16) -> Vec<Process> {
    let inodes = tcp_listener_inodes(proc_root, port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let owners = socket_owners(proc_root);
    let mut pids: Vec<i32> = inodes
        .iter()
        .filter_map(|i| owners.get(i))
        .flatten()
        .copied()
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(|pid| get(proc_root, pid))
        .collect()
}

/// Clock ticks per second (`cpu_ticks`, `start_ticks`).
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// uid → user name from a passwd file (`/etc/passwd`, or the host's under `HOST_ETC`).
/// An unreadable file gives an empty map: callers show the number instead.
pub fn user_names(passwd: &Path) -> HashMap<u32, String> {
    std::fs::read_to_string(passwd)
        .map(|text| parse_passwd(&text))
        .unwrap_or_default()
}

/// Parses passwd lines `name:x:uid:…`; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let _ = it.next()?;
            let uid = it.next()?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn passwd_lines_map_uids_to_names() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n#c\nbad\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn this_process_is_listed_with_its_command_line() {
        let me = std::process::id() as i32;
        let all = list(Path::new("/proc")).unwrap();
        let p = all.iter().find(|p| p.pid == me).expect("self listed");
        assert_eq!(p.cmdline, std::env::args().collect::<Vec<_>>());
        assert!(p.rss_bytes > 0 && p.num_threads >= 1);
        assert_eq!(get(Path::new("/proc"), me).map(|p| p.pid), Some(me));
    }

    #[test]
    fn the_holder_of_a_listening_port_is_found_by_its_socket_inode() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id() as i32;
        let holders = tcp_port_holders(Path::new("/proc"), port);
        assert_eq!(holders.iter().map(|p| p.pid).collect::<Vec<_>>(), [me]);
        let inodes = tcp_listener_inodes(Path::new("/proc"), port);
        assert_eq!(inodes.len(), 1);
        assert!(
            socket_inodes(Path::new("/proc"), me)
                .unwrap()
                .contains(&inodes[0])
        );
        drop(l);
        assert!(tcp_port_holders(Path::new("/proc"), port).is_empty());
    }

    #[test]
    fn an_unreadable_fd_table_is_an_error_not_an_empty_list() {
        // procstat_tcp reported zeros for processes whose fd/ it could not read.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("100")).unwrap();
        let e = socket_inodes(root.path(), 100).unwrap_err();
        assert!(e.path.ends_with("100/fd"), "{e}");
        std::fs::create_dir(root.path().join("100/fd")).unwrap();
        assert_eq!(socket_inodes(root.path(), 100).unwrap(), Vec::<u64>::new());
    }
}
