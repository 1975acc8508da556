//! Socket inode → the processes (and their fds) that hold it, kept up to date between gathers
//! instead of re-read in full each time.
//!
//! The kernel's socket dumps (sock_diag, `/proc/net/unix`) say which sockets exist, not who
//! holds them; the only owner information is each process's `fd/` directory, one `readlink`
//! per descriptor — about 7× the cost of the dump itself at 100k sockets. [`SockMap`] keeps
//! what it read and, each gather, re-reads only where something changed. The caller first
//! reports every socket inode its dump saw ([`SockMap::live`]), then calls
//! [`SockMap::update`], then asks for [`SockMap::holders`] / [`SockMap::fd_count`].
//!
//! What makes a process's table be read again (and how much of it):
//! - a pid not seen before, or one whose `/proc/<pid>` directory is a new one (pid reuse: the
//!   directory's inode number, which readdir of the proc root gives for free, changes): every
//!   fd;
//! - its number of open fds changed (`stat` of `fd/` gives it in `st_size` since Linux 6.2;
//!   one system call per process per gather): readdir, and `readlink` of fd numbers not seen
//!   before and of fds whose socket is gone from the dump;
//! - a socket it held is gone from the dump (closed; its fd number may hold a new one): the
//!   same;
//! - with hunting on (the `hunt` argument of [`SockMap::new`]), when a socket in the dump is
//!   still held by no known fd after that: a `readlink` of each fd that was not a socket of
//!   the dumps (a listing only where one of those numbers is gone), first in every process
//!   whose table moved this gather, then in the processes least recently hunted or read in
//!   full — as many as `processes × elapsed / HUNT_PERIOD` per gather (at least one), so
//!   that sockets of processes outside the set (a busy host makes some every gather) cost a
//!   bounded share of a hunt instead of a readlink of every file of every process each
//!   gather — until every such socket is found. A socket that every covered process has
//!   been hunted or read in full for since the dump first showed it (sockets of other
//!   processes, of other users' processes when not root, embryos in a listener's queue) is
//!   remembered as unowned and not looked for again;
//! - **a full re-read of every fd, spread over time**: each gather re-reads in full the
//!   processes whose last full read is oldest, as many as `processes × elapsed / period`, so
//!   that every covered process is read in full at least once per `period` (plus one gather
//!   interval). A period of zero reads everything every gather.
//!
//! - every fd of a socket the map credits with more than one fd (shared by processes, or
//!   dup'ed): a `readlink` each gather, and a full read of a process where one no longer
//!   refers to it — so the map never keeps an fd that let go of a socket still alive through
//!   another.
//!
//! Staleness bound: a new socket that took the fd number of a file (or of a socket not in
//! the dumps) in a process whose table did not otherwise move is found by the hunt, at most
//! [`HUNT_PERIOD`] plus one gather interval later (without hunting, at its next full read).
//! Missed until the process's next full read, at most `period` plus one gather interval
//! later, is an fd that comes to refer to a socket the map already knows (a `dup`/`dup2`, one received over a unix socket) in a process whose number of open fds is
//! back to the same at the next gather — and, through it, a process still credited with a
//! socket it handed on that way and then closed. Everything else (new and closed sockets,
//! new, exited and reused pids, fd numbers reused for new sockets, forks that share sockets,
//! an fd of a shared socket closed) is seen at the gather where it happens (a socket made
//! while that gather runs, at the next).
//! Recovery actions never use this map: they look the owner up afresh
//! ([`crate::procs::tcp_port_holders`]).
//!
//! Memory: about 12 bytes per fd of the covered processes plus about 32 bytes per tracked
//! socket (hash table slack included).

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use rustix::fs::{AtFlags, Mode, OFlags, RawDir, openat, readlinkat_raw, statat};
use rustix::io::Errno;

/// How long a socket no known fd holds may be looked for before every covered process has
/// been hunted for it: the hunt reads `processes × elapsed / HUNT_PERIOD` processes a gather.
pub const HUNT_PERIOD: Duration = Duration::from_secs(60);

/// No process holds the socket (yet): an unowned live socket.
const NONE: i32 = 0;
/// Several processes hold the socket: see `Index::shared`.
const SHARED: i32 = -1;

/// What one fd referred to when it was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not a socket.
    File,
    /// A socket the dumps did not report (another protocol, or made after the dump).
    Socket,
    /// A socket of the dumps, recorded in the index.
    Tracked,
}

#[derive(Debug, Clone, Copy)]
struct Fd {
    num: u32,
    /// The socket's inode (0 for files). Socket inodes are 32-bit: the kernel numbers them
    /// with `get_next_ino()` and sock_diag reports them as u32.
    inode: u32,
    kind: Kind,
}

/// How much of a process's fd table to read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// Every fd.
    Full,
    /// New fd numbers and fds whose socket is gone.
    Changed,
    /// Every fd that was not a socket of the dumps, without a listing (see `hunt`).
    Hunt,
}

#[derive(Debug)]
struct Proc {
    /// Inode number of `/proc/<pid>`: a new process under a reused pid has a new one. So may
    /// the same process, when the kernel drops its proc dentry under memory pressure: `start`
    /// tells the two apart.
    ident: u64,
    /// Start time of the process (`/proc/<pid>/stat` field 22, clock ticks since boot), read
    /// at each full read; `None` when it could not be read.
    start: Option<u64>,
    /// `st_size` of `fd/` when last read (the number of open fds on Linux ≥ 6.2).
    fd_size: i64,
    /// Sorted by fd number.
    fds: Vec<Fd>,
    /// Why `fd/` could not be read (another user's process when not root).
    unreadable: Option<Errno>,
    /// Gather in which it was last read, and how deep.
    read_round: u32,
    read_depth: Depth,
    /// When it was last read in full.
    full_at: Instant,
    /// When every fd that was not a socket of the dumps was last read (a hunt or a full read).
    hunted_at: Instant,
}

/// Index entry of one live socket.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last gather whose dump reported it.
    round: u32,
    /// The only holding process, [`NONE`] or [`SHARED`].
    pid: i32,
    /// Number of fds referring to it, over every process.
    nfds: u32,
}

#[derive(Debug, Default)]
struct Index {
    round: u32,
    map: FxHashMap<u32, Entry>,
    /// (pid, fds) of sockets held by more than one process.
    shared: FxHashMap<u32, Vec<(i32, u32)>>,
    /// Reported by this gather's dump, not in `map`.
    unknown: FxHashSet<u32>,
    /// Holder changes so far (adds and removes).
    changes: u64,
}

impl Index {
    fn is_live(&self, inode: u32) -> bool {
        self.map.get(&inode).is_some_and(|e| e.round == self.round) || self.unknown.contains(&inode)
    }

    fn add(&mut self, pid: i32, inode: u32) {
        self.changes += 1;
        let round = self.round;
        if self.unknown.remove(&inode) {
            self.map.insert(
                inode,
                Entry {
                    round,
                    pid: NONE,
                    nfds: 0,
                },
            );
        }
        let Some(e) = self.map.get_mut(&inode) else {
            return;
        };
        if e.pid == NONE || e.pid == pid {
            e.pid = pid;
        } else if e.pid == SHARED {
            let v = self.shared.entry(inode).or_default();
            match v.iter_mut().find(|(p, _)| *p == pid) {
                Some((_, n)) => *n += 1,
                None => v.push((pid, 1)),
            }
        } else {
            self.shared.insert(inode, vec![(e.pid, e.nfds), (pid, 1)]);
            e.pid = SHARED;
        }
        e.nfds += 1;
    }

    /// One fd of `pid` no longer refers to `inode`. A live socket left with no known holder
    /// becomes unknown again, so that it is looked for.
    fn remove(&mut self, pid: i32, inode: u32) {
        let Some(e) = self.map.get_mut(&inode) else {
            return;
        };
        self.changes += 1;
        if e.pid == SHARED {
            let Some(v) = self.shared.get_mut(&inode) else {
                return;
            };
            let Some(i) = v.iter().position(|(p, _)| *p == pid) else {
                return;
            };
            v[i].1 -= 1;
            if v[i].1 == 0 {
                v.swap_remove(i);
            }
            e.nfds -= 1;
            if v.len() == 1 {
                e.pid = v[0].0;
                self.shared.remove(&inode);
            }
        } else if e.pid == pid {
            e.nfds -= 1;
            if e.nfds == 0 {
                e.pid = NONE;
                if e.round == self.round {
                    self.map.remove(&inode);
                    self.unknown.insert(inode);
                }
            }
        }
    }
}

/// Counters of the work done, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Updates so far.
    pub updates: u64,
    /// fd directories read (readdir).
    pub dirs_read: u64,
    /// Of which in full.
    pub full_reads: u64,
    /// `readlink` calls.
    pub readlinks: u64,
    /// `stat` calls on fd directories (the change check).
    pub stats: u64,
    /// Updates that hunted for unowned sockets.
    pub hunts: u64,
    /// Processes hunted (over every update).
    pub hunted: u64,
}

/// The socket → holders map of a set of processes. See the module documentation.
#[derive(Debug)]
pub struct SockMap {
    root: PathBuf,
    period: Duration,
    hunt: bool,
    procs: FxHashMap<i32, Proc>,
    idx: Index,
    last_update: Option<Instant>,
    /// Fractional processes owed a full read (see `update`).
    credit: f64,
    /// Fractional processes owed a hunt while sockets are unknown (see `hunt_unknown`).
    hunt_credit: f64,
    /// Sockets of the dumps no known fd holds, still looked for: when the dump first showed
    /// each (see `settle_unknown`).
    pending: FxHashMap<u32, Instant>,
    force_full: bool,
    stats: Stats,
    // Scratch, reused.
    dirbuf: Vec<MaybeUninit<u8>>,
    nums: Vec<u32>,
    fds: Vec<Fd>,
    now: Vec<(i32, u64)>,
    dirty: FxHashSet<i32>,
}

/// Keeps the `k` smallest items of `v` (the oldest, for items that start with an `Instant`),
/// in no particular order.
fn keep_oldest<T: Ord>(v: &mut Vec<T>, k: usize) {
    if k == 0 {
        v.clear();
    } else if k < v.len() {
        v.select_nth_unstable(k - 1);
        v.truncate(k);
    }
}

/// Room kept: 2× what is used when more than 4× is held (at least `floor`).
fn shrink_vec<T>(v: &mut Vec<T>, used: usize, floor: usize) {
    if v.capacity() > floor.max(4 * used) {
        v.shrink_to(floor.max(2 * used));
    }
}

/// [`shrink_vec`] for a map (a floor of 64 entries).
fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut FxHashMap<K, V>, used: usize) {
    if m.capacity() > 64.max(4 * used) {
        m.shrink_to(64.max(2 * used));
    }
}

/// [`shrink_map`] for a set.
fn shrink_set<K: Eq + std::hash::Hash>(m: &mut FxHashSet<K>, used: usize) {
    if m.capacity() > 64.max(4 * used) {
        m.shrink_to(64.max(2 * used));
    }
}

/// `"<pid>/fd"` or `"<n>"` as a NUL-terminated string on the stack.
struct Name {
    buf: [u8; 24],
    len: usize,
}

impl Name {
    fn new(n: u32, suffix: &[u8]) -> Name {
        let mut buf = [0u8; 24];
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let d = &digits[i..];
        buf[..d.len()].copy_from_slice(d);
        buf[d.len()..d.len() + suffix.len()].copy_from_slice(suffix);
        Name {
            buf,
            len: d.len() + suffix.len(),
        }
    }

    fn cstr(&self) -> &CStr {
        // buf[len] is 0 (buf starts zeroed and len ≤ 20) and no digit or suffix byte is 0.
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }
}

fn parse_u32(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// `socket:[N]` → N.
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let n = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

impl SockMap {
    /// A map of the processes under `proc_root` that reads each one in full at least once per
    /// `period` (zero: every gather), hunting for unowned sockets when `hunt` is set.
    pub fn new(proc_root: &Path, period: Duration, hunt: bool) -> SockMap {
        SockMap {
            root: proc_root.to_path_buf(),
            period,
            hunt,
            procs: FxHashMap::default(),
            idx: Index::default(),
            last_update: None,
            credit: 0.0,
            hunt_credit: 0.0,
            pending: FxHashMap::default(),
            force_full: false,
            stats: Stats::default(),
            dirbuf: Vec::new(),
            nums: Vec::new(),
            fds: Vec::new(),
            now: Vec::new(),
            dirty: FxHashSet::default(),
        }
    }

    /// The proc root this map reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a gather: report every socket of the dump with [`SockMap::live`], then call
    /// [`SockMap::update`].
    pub fn begin(&mut self) {
        self.idx.round = self.idx.round.wrapping_add(1);
        self.idx.unknown.clear();
    }

    /// A socket inode the dump reported (0, as for TIME_WAIT sockets, is ignored). Returns
    /// what the map knows of its holders now: if [`SockMap::changes`] is the same after the
    /// update, [`Hint::holder`] answers without a second lookup.
    pub fn live(&mut self, inode: u64) -> Hint {
        let Ok(inode) = u32::try_from(inode) else {
            return Hint(NONE);
        };
        if inode == 0 {
            return Hint(NONE);
        }
        match self.idx.map.get_mut(&inode) {
            Some(e) => {
                e.round = self.idx.round;
                Hint(e.pid)
            }
            None => {
                self.idx.unknown.insert(inode);
                Hint(NONE)
            }
        }
    }

    /// A counter of every change of holders; equal before and after an update when the
    /// update changed no holder.
    pub fn changes(&self) -> u64 {
        self.idx.changes
    }

    /// The next update reads every covered process in full.
    pub fn force_full(&mut self) {
        self.force_full = true;
    }

    /// Work counters since the map was made.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Brings the map up to date with the processes `only` lists (sorted; all processes under
    /// the root when `None`) and the sockets reported since [`SockMap::begin`].
    pub fn update(&mut self, only: Option<&[i32]>) {
        self.update_at(Instant::now(), only);
    }

    /// [`SockMap::update`] at a given time (tests drive the full-read schedule with it).
    pub fn update_at(&mut self, now: Instant, only: Option<&[i32]>) {
        self.stats.updates += 1;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root = match openat(rustix::fs::CWD, &self.root, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(_) => {
                for (pid, p) in self.procs.drain() {
                    for f in &p.fds {
                        if f.kind == Kind::Tracked {
                            self.idx.remove(pid, f.inode);
                        }
                    }
                }
                self.settle_unknown(now);
                return;
            }
        };
        let sorted;
        let only = match only {
            Some(o) if !o.is_sorted() => {
                sorted = {
                    let mut v = o.to_vec();
                    v.sort_unstable();
                    v
                };
                Some(&sorted[..])
            }
            o => o,
        };
        self.list(&root, only);

        // Sockets gone from the dump: their holders are read again.
        let round = self.idx.round;
        self.dirty.clear();
        let (dirty, shared) = (&mut self.dirty, &mut self.idx.shared);
        self.idx.map.retain(|inode, e| {
            if e.round == round {
                return true;
            }
            if e.pid == SHARED {
                for (pid, _) in shared.remove(inode).unwrap_or_default() {
                    dirty.insert(pid);
                }
            } else if e.pid != NONE {
                dirty.insert(e.pid);
            }
            false
        });

        // Exited processes and reused pids. A new directory inode under the same pid is a
        // new process unless its start time is the one read before (the kernel also gives a
        // live process's directory a new inode when it drops the dentry under memory
        // pressure, or after `drop_caches`: without this, every process would be read in full
        // again just when the host is short of memory).
        let (now_list, idx) = (&self.now, &mut self.idx);
        self.procs.retain(|pid, p| {
            let keep = now_list
                .binary_search_by_key(pid, |(q, _)| *q)
                .is_ok_and(|i| {
                    let ident = now_list[i].1;
                    if ident != p.ident && p.start.is_some() && start_ticks(&root, *pid) == p.start
                    {
                        p.ident = ident;
                    }
                    ident == p.ident
                });
            if !keep {
                for f in &p.fds {
                    if f.kind == Kind::Tracked {
                        idx.remove(*pid, f.inode);
                    }
                }
            }
            keep
        });

        // Who is owed a full read: everyone on the first update, with a zero period or when
        // forced; otherwise the oldest `processes × elapsed / period`.
        let all = self.force_full || self.period.is_zero() || self.last_update.is_none();
        self.force_full = false;
        let mut owed = FxHashSet::default();
        let elapsed = self.last_update.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        if !all && self.last_update.is_some() {
            self.credit += self.procs.len() as f64 * elapsed / self.period.as_secs_f64();
            let k = (self.credit.floor() as usize).min(self.procs.len());
            self.credit -= k as f64;
            if self.credit > self.procs.len() as f64 {
                self.credit = 0.0;
            }
            if k > 0 {
                let mut by_age: Vec<(Instant, i32)> = self
                    .procs
                    .iter()
                    .map(|(pid, p)| (p.full_at, *pid))
                    .collect();
                keep_oldest(&mut by_age, k);
                owed.extend(by_age.iter().map(|(_, pid)| *pid));
            }
        }
        self.last_update = Some(now);

        let list = std::mem::take(&mut self.now);
        for &(pid, ident) in &list {
            let depth = match self.procs.get(&pid) {
                None => Some(Depth::Full),
                Some(_) if all || owed.contains(&pid) => Some(Depth::Full),
                Some(p) if p.unreadable.is_some() => None,
                Some(_) if self.dirty.contains(&pid) => Some(Depth::Changed),
                Some(p) => {
                    self.stats.stats += 1;
                    let size = fd_size(&root, pid);
                    (size != p.fd_size).then_some(Depth::Changed)
                }
            };
            if let Some(depth) = depth {
                self.read(&root, pid, ident, depth, now);
            }
        }

        // Sockets made between an earlier dump and the read that found their fd were
        // recorded as untracked sockets: claim them without a system call.
        if !self.idx.unknown.is_empty() {
            let wanted = self.idx.unknown.clone();
            for (pid, p) in self.procs.iter_mut() {
                for f in p.fds.iter_mut() {
                    if f.kind == Kind::Socket && wanted.contains(&f.inode) {
                        f.kind = Kind::Tracked;
                        self.idx.add(*pid, f.inode);
                    }
                }
            }
        }
        if self.hunt {
            self.hunt_unknown(&root, &list, elapsed, now);
        }
        self.now = list;
        self.settle_unknown(now);

        // A socket credited with several fds is where a stale entry can hide: an fd of it
        // closed while the socket lives on through another, in a process whose fd count came
        // back to the same number. Those fds are read again every gather.
        let several: Vec<u64> = self
            .idx
            .map
            .iter()
            .filter(|(_, e)| e.nfds >= 2)
            .map(|(i, _)| u64::from(*i))
            .collect();
        self.confirm_at(now, &several);
        self.shrink();
    }

    /// Gives back what a spike grew (a process that held 100,000 sockets, then closed them or
    /// exited): a collection keeps at most four times what it holds now, so the agent's memory
    /// follows the host down again instead of keeping its peak (docs/performance-agent.md §4).
    /// Steady gathers never reallocate: the slack is 2× to 4×, and small collections are left
    /// alone.
    fn shrink(&mut self) {
        let mut most = 0;
        for p in self.procs.values_mut() {
            let used = p.fds.len();
            most = most.max(used);
            shrink_vec(&mut p.fds, used, 16);
        }
        // The scratch lists hold one process's fds at a time (cleared before each use).
        self.fds.clear();
        self.nums.clear();
        shrink_vec(&mut self.fds, most, 256);
        shrink_vec(&mut self.nums, most, 256);
        let n = self.procs.len();
        shrink_map(&mut self.procs, n);
        let n = self.idx.map.len();
        shrink_map(&mut self.idx.map, n);
        let n = self.idx.shared.len();
        shrink_map(&mut self.idx.shared, n);
        let n = self.idx.unknown.len();
        shrink_set(&mut self.idx.unknown, n);
        let n = self.pending.len();
        shrink_map(&mut self.pending, n);
        shrink_set(&mut self.dirty, 0);
    }

    /// Looks for the sockets of the dump that no known fd holds: first in every process whose
    /// table moved this gather (where a new socket most likely is), then in the processes
    /// least recently hunted or read in full, `processes × elapsed / HUNT_PERIOD` of them (at
    /// least one), until none is left.
    fn hunt_unknown(&mut self, root: &OwnedFd, list: &[(i32, u64)], elapsed: f64, now: Instant) {
        if self.idx.unknown.is_empty() {
            self.hunt_credit = 0.0;
            return;
        }
        self.stats.hunts += 1;
        let round = self.idx.round;
        for &(pid, ident) in list {
            if self.idx.unknown.is_empty() {
                return;
            }
            if self.procs.get(&pid).is_some_and(|p| {
                p.unreadable.is_none() && p.read_round == round && p.read_depth == Depth::Changed
            }) {
                self.hunt(root, pid, ident, now);
            }
        }
        if self.idx.unknown.is_empty() {
            return;
        }
        // Not again if this gather already read it in full or hunted it.
        let mut by_age: Vec<(Instant, i32, u64)> = self
            .procs
            .iter()
            .filter(|(_, p)| p.unreadable.is_none() && p.read_round != round)
            .map(|(pid, p)| (p.hunted_at, *pid, p.ident))
            .collect();
        if by_age.is_empty() {
            return;
        }
        self.hunt_credit += self.procs.len() as f64 * elapsed / HUNT_PERIOD.as_secs_f64();
        let k = (self.hunt_credit.ceil() as usize).clamp(1, by_age.len());
        self.hunt_credit = (self.hunt_credit - k as f64).clamp(0.0, self.procs.len() as f64);
        keep_oldest(&mut by_age, k);
        by_age.sort_unstable();
        for (_, pid, ident) in by_age {
            if self.idx.unknown.is_empty() {
                break;
            }
            self.hunt(root, pid, ident, now);
        }
    }

    /// Sockets still unknown after the update: one that every covered process has been
    /// hunted or read in full for since the dump first showed it is remembered as unowned
    /// (not looked for again while live); the others are looked for again at the next
    /// gathers. Without hunting, every one is unowned at once.
    fn settle_unknown(&mut self, now: Instant) {
        let unknown = &self.idx.unknown;
        self.pending.retain(|i, _| unknown.contains(i));
        let oldest = if self.hunt {
            self.procs
                .values()
                .filter(|p| p.unreadable.is_none())
                .map(|p| p.hunted_at)
                .min()
        } else {
            None
        };
        let (round, map, pending) = (self.idx.round, &mut self.idx.map, &mut self.pending);
        self.idx.unknown.retain(|&inode| {
            let since = *pending.entry(inode).or_insert(now);
            if oldest.is_some_and(|o| o < since) {
                return true;
            }
            pending.remove(&inode);
            map.insert(
                inode,
                Entry {
                    round,
                    pid: NONE,
                    nfds: 0,
                },
            );
            false
        });
    }

    /// The processes under the root (pid, inode number of its directory), filtered by `only`,
    /// sorted, into `self.now`.
    fn list(&mut self, root: &OwnedFd, only: Option<&[i32]>) {
        self.now.clear();
        if self.dirbuf.len() < 32 * 1024 {
            self.dirbuf.resize(32 * 1024, MaybeUninit::uninit());
        }
        let mut dir = RawDir::new(root.as_fd(), &mut self.dirbuf);
        while let Some(Ok(e)) = dir.next() {
            let Some(pid) = parse_u32(e.file_name().to_bytes()).and_then(|p| i32::try_from(p).ok())
            else {
                continue;
            };
            if only.is_none_or(|o| o.binary_search(&pid).is_ok()) {
                self.now.push((pid, e.ino()));
            }
        }
        self.now.sort_unstable();
    }

    /// Looks for unknown sockets in `pid`'s fds that were not sockets of the dumps (a file
    /// or another socket closed and a new socket given its number, the fd count unchanged):
    /// one readlink each, no listing. The listing is needed only if the set of fd numbers
    /// changed, and with an unchanged count that closes one of the numbers the map has: a
    /// readlink that fails sends the process to a listing (`Depth::Changed`); a closed
    /// number that held a socket of the dumps is the map's documented staleness.
    fn hunt(&mut self, root: &OwnedFd, pid: i32, ident: u64, now: Instant) {
        let round = self.idx.round;
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        p.read_round = round;
        p.read_depth = Depth::Hunt;
        p.hunted_at = now;
        self.stats.hunted += 1;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(dirfd) = openat(
            root,
            Name::new(pid as u32, b"/fd").cstr(),
            flags,
            Mode::empty(),
        ) else {
            return;
        };
        let mut link = [0u8; 64];
        let mut closed = false;
        for f in p.fds.iter_mut() {
            if f.kind == Kind::Tracked {
                continue;
            }
            self.stats.readlinks += 1;
            // A number gone sends the process to a listing afterwards; the other numbers
            // are still read here (a listing does not read numbers it already has).
            let Ok(n) = readlinkat_raw(&dirfd, Name::new(f.num, b"").cstr(), &mut link[..]) else {
                closed = true;
                continue;
            };
            match parse_socket_link(&link[..n.min(link.len())]).and_then(|i| u32::try_from(i).ok())
            {
                Some(inode) if self.idx.is_live(inode) => {
                    *f = Fd {
                        num: f.num,
                        inode,
                        kind: Kind::Tracked,
                    };
                    self.idx.add(pid, inode);
                }
                Some(inode) => {
                    *f = Fd {
                        num: f.num,
                        inode,
                        kind: Kind::Socket,
                    }
                }
                None => {
                    *f = Fd {
                        num: f.num,
                        inode: 0,
                        kind: Kind::File,
                    }
                }
            }
        }
        if closed {
            self.read(root, pid, ident, Depth::Changed, now);
        }
    }

    /// Reads `pid`'s fd table to `depth`, updating the index.
    fn read(&mut self, root: &OwnedFd, pid: i32, ident: u64, depth: Depth, now: Instant) {
        let round = self.idx.round;
        let p = self.procs.entry(pid).or_insert_with(|| Proc {
            ident,
            start: None,
            fd_size: -1,
            fds: Vec::new(),
            unreadable: None,
            read_round: 0,
            read_depth: Depth::Full,
            full_at: now,
            hunted_at: now,
        });
        p.read_round = round;
        p.read_depth = depth;
        if depth == Depth::Full {
            p.full_at = now;
            p.hunted_at = now;
            p.start = start_ticks(root, pid);
        }
        // The size before the listing: an fd opened in between is in the listing but not in
        // the size, so the next check reads again rather than missing it.
        let path = Name::new(pid as u32, b"/fd");
        p.fd_size = statat(root, path.cstr(), AtFlags::empty()).map_or(-1, |s| s.st_size);
        self.stats.stats += 1;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dirfd = match openat(root, path.cstr(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                for f in p.fds.drain(..) {
                    if f.kind == Kind::Tracked {
                        self.idx.remove(pid, f.inode);
                    }
                }
                p.unreadable = Some(e);
                return;
            }
        };
        p.unreadable = None;
        self.stats.dirs_read += 1;
        if depth == Depth::Full {
            self.stats.full_reads += 1;
        }
        self.nums.clear();
        {
            let mut dir = RawDir::new(dirfd.as_fd(), &mut self.dirbuf);
            while let Some(Ok(e)) = dir.next() {
                if let Some(n) = parse_u32(e.file_name().to_bytes()) {
                    self.nums.push(n);
                }
            }
        }
        self.nums.sort_unstable();

        let old = std::mem::take(&mut p.fds);
        let mut new = std::mem::take(&mut self.fds);
        new.clear();
        let mut j = 0;
        let mut link = [0u8; 64];
        for &num in &self.nums {
            while j < old.len() && old[j].num < num {
                if old[j].kind == Kind::Tracked {
                    self.idx.remove(pid, old[j].inode);
                }
                j += 1;
            }
            let prev = (j < old.len() && old[j].num == num).then(|| {
                j += 1;
                old[j - 1]
            });
            let again = match prev {
                None => true,
                Some(f) => match (depth, f.kind) {
                    (Depth::Full, _) => true,
                    (_, Kind::Tracked) => {
                        self.idx.map.get(&f.inode).is_none_or(|e| e.round != round)
                    }
                    _ => false,
                },
            };
            if let (false, Some(f)) = (again, prev) {
                new.push(f);
                continue;
            }
            self.stats.readlinks += 1;
            let fresh = readlinkat_raw(&dirfd, Name::new(num, b"").cstr(), &mut link[..])
                .ok()
                .map(|n| {
                    let target = &link[..n.min(link.len())];
                    match parse_socket_link(target).and_then(|i| u32::try_from(i).ok()) {
                        Some(inode) if self.idx.is_live(inode) => Fd {
                            num,
                            inode,
                            kind: Kind::Tracked,
                        },
                        Some(inode) => Fd {
                            num,
                            inode,
                            kind: Kind::Socket,
                        },
                        None => Fd {
                            num,
                            inode: 0,
                            kind: Kind::File,
                        },
                    }
                });
            let was = prev.filter(|f| f.kind == Kind::Tracked).map(|f| f.inode);
            let is = fresh.filter(|f| f.kind == Kind::Tracked).map(|f| f.inode);
            if was != is {
                if let Some(i) = was {
                    self.idx.remove(pid, i);
                }
                if let Some(i) = is {
                    self.idx.add(pid, i);
                }
            }
            // An fd closed between the listing and the readlink is gone.
            if let Some(f) = fresh {
                new.push(f);
            }
        }
        for f in &old[j..] {
            if f.kind == Kind::Tracked {
                self.idx.remove(pid, f.inode);
            }
        }
        // Entries for this pid exist (or_insert above).
        if let Some(p) = self.procs.get_mut(&pid) {
            p.fds = new;
        }
        self.fds = old;
    }

    /// The (pid, number of fds) holding `inode`; empty when no readable process holds it.
    pub fn holders(&self, inode: u64) -> Holders<'_> {
        let e = u32::try_from(inode)
            .ok()
            .and_then(|i| self.idx.map.get(&i).map(|e| (i, e)));
        match e {
            Some((_, e)) if e.pid > 0 => Holders::One(Some((e.pid, e.nfds))),
            Some((i, e)) if e.pid == SHARED => Holders::Many(
                self.idx
                    .shared
                    .get(&i)
                    .map_or(&[][..], |v| v.as_slice())
                    .iter(),
            ),
            _ => Holders::One(None),
        }
    }

    /// How many fds, over every covered process, refer to `inode`.
    pub fn fd_count(&self, inode: u64) -> u32 {
        u32::try_from(inode)
            .ok()
            .and_then(|i| self.idx.map.get(&i))
            .map_or(0, |e| e.nfds)
    }

    /// Whether `pid`'s fd table was read: `None` when not covered (not listed, or gone),
    /// `Some(Err)` when it could not be read.
    pub fn readable(&self, pid: i32) -> Option<Result<(), std::io::Error>> {
        let p = self.procs.get(&pid)?;
        Some(match p.unreadable {
            None => Ok(()),
            Some(e) => Err(e.into()),
        })
    }

    /// Re-reads every fd the map credits with one of `inodes` and, where one no longer
    /// refers to it, that process's whole table, so that no socket of the set is credited
    /// to a process that has let go of it. For counts that recovery rules act on.
    pub fn confirm(&mut self, inodes: &[u64]) {
        self.confirm_at(Instant::now(), inodes);
    }

    /// [`SockMap::confirm`] at a given time (the time of the update it follows).
    pub fn confirm_at(&mut self, now: Instant, inodes: &[u64]) {
        let set: FxHashSet<u32> = inodes
            .iter()
            .filter_map(|i| u32::try_from(*i).ok())
            .collect();
        // Only the processes the map credits with one of them.
        let mut pids: Vec<i32> = set
            .iter()
            .flat_map(|i| self.holders(u64::from(*i)))
            .map(|(pid, _)| pid)
            .collect();
        if pids.is_empty() {
            return;
        }
        pids.sort_unstable();
        pids.dedup();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(root) = openat(rustix::fs::CWD, &self.root, flags, Mode::empty()) else {
            return;
        };
        let mut wrong = Vec::new();
        let mut link = [0u8; 64];
        for pid in &pids {
            let Some(p) = self.procs.get(pid) else {
                continue;
            };
            let mut dirfd: Option<OwnedFd> = None;
            for f in &p.fds {
                if f.kind != Kind::Tracked || !set.contains(&f.inode) {
                    continue;
                }
                if dirfd.is_none() {
                    let path = Name::new(*pid as u32, b"/fd");
                    match openat(&root, path.cstr(), flags, Mode::empty()) {
                        Ok(d) => dirfd = Some(d),
                        Err(_) => {
                            wrong.push((*pid, p.ident));
                            break;
                        }
                    }
                }
                let Some(d) = dirfd.as_ref() else { break };
                self.stats.readlinks += 1;
                let ok = readlinkat_raw(d, Name::new(f.num, b"").cstr(), &mut link[..])
                    .ok()
                    .and_then(|n| parse_socket_link(&link[..n.min(link.len())]))
                    == Some(u64::from(f.inode));
                if !ok {
                    wrong.push((*pid, p.ident));
                    break;
                }
            }
        }
        for (pid, ident) in wrong {
            self.read(&root, pid, ident, Depth::Full, now);
        }
        // A socket still looked for that a read above found is no longer pending.
        let unknown = &self.idx.unknown;
        self.pending.retain(|i, _| unknown.contains(i));
    }
}

/// Field 22 of `/proc/<pid>/stat` (the process's start time in clock ticks since boot).
fn start_ticks(root: &impl AsFd, pid: i32) -> Option<u64> {
    let fd = openat(
        root,
        Name::new(pid as u32, b"/stat").cstr(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 1024];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &buf[buf[..n].iter().rposition(|&b| b == b')')? + 1..n];
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn fd_size(root: &impl AsFd, pid: i32) -> i64 {
    let path = Name::new(pid as u32, b"/fd");
    statat(root, path.cstr(), AtFlags::empty()).map_or(-1, |s| s.st_size)
}

/// What [`SockMap::live`] saw of a socket's holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint(i32);

impl Hint {
    /// `Some(Some(pid))`: held by that one process only; `Some(None)`: by no known process;
    /// `None`: by several (ask [`SockMap::holders`]). Valid while [`SockMap::changes`] has
    /// not moved since the call to `live`.
    pub fn holder(self) -> Option<Option<i32>> {
        match self.0 {
            SHARED => None,
            NONE => Some(None),
            pid => Some(Some(pid)),
        }
    }
}

/// The holders of one socket: (pid, number of its fds).
pub enum Holders<'a> {
    One(Option<(i32, u32)>),
    Many(std::slice::Iter<'a, (i32, u32)>),
}

impl Iterator for Holders<'_> {
    type Item = (i32, u32);

    fn next(&mut self) -> Option<(i32, u32)> {
        match self {
            Holders::One(o) => o.take(),
            Holders::Many(it) => it.next().copied(),
        }
    }
}

/// Socket inode → number of fds referring to it, from one fresh walk of every fd table
/// under `proc_root` (the reference the map is tested against, and what callers that must
/// not see a stale map use).
pub fn fresh_fd_counts(proc_root: &Path) -> FxHashMap<u64, u32> {
    let mut out = FxHashMap::default();
    for_each_socket_fd(proc_root, |_, _, inode| *out.entry(inode).or_default() += 1);
    out
}

/// Calls `f(pid, fd, inode)` for every fd of every process under `proc_root` that refers to
/// a socket: readdir of each `fd/` and one `readlinkat` per entry.
pub fn for_each_socket_fd(proc_root: &Path, mut f: impl FnMut(i32, u32, u64)) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(root) = openat(rustix::fs::CWD, proc_root, flags, Mode::empty()) else {
        return;
    };
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
    let mut pids = Vec::new();
    {
        let mut dir = RawDir::new(root.as_fd(), &mut buf);
        while let Some(Ok(e)) = dir.next() {
            if let Some(pid) = parse_u32(e.file_name().to_bytes()) {
                pids.push(pid);
            }
        }
    }
    let mut nums = Vec::new();
    let mut link = [0u8; 64];
    for pid in pids {
        let Ok(dirfd) = openat(&root, Name::new(pid, b"/fd").cstr(), flags, Mode::empty()) else {
            continue;
        };
        nums.clear();
        {
            let mut dir = RawDir::new(dirfd.as_fd(), &mut buf);
            while let Some(Ok(e)) = dir.next() {
                if let Some(n) = parse_u32(e.file_name().to_bytes()) {
                    nums.push(n);
                }
            }
        }
        for &n in &nums {
            let Ok(len) = readlinkat_raw(&dirfd, Name::new(n, b"").cstr(), &mut link[..]) else {
                continue;
            };
            if let Some(inode) = parse_socket_link(&link[..len.min(link.len())]) {
                f(pid as i32, n, inode);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    #[test]
    fn names_and_links() {
        assert_eq!(Name::new(0, b"").cstr(), c"0");
        assert_eq!(Name::new(4_294_967_295, b"/fd").cstr(), c"4294967295/fd");
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"socket:[1x]"), None);
        assert_eq!(parse_u32(b"123"), Some(123));
        assert_eq!(parse_u32(b"self"), None);
        assert_eq!(parse_u32(b"99999999999"), None);
    }

    // ---- fixture trees: `<root>/<pid>/fd/<n>` symlinks to `socket:[N]` or a file ----

    fn link(root: &Path, pid: i32, fd: u32, target: &str) {
        let dir = root.join(pid.to_string()).join("fd");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(fd.to_string());
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// Socket inode → {pid: fds} over `inodes`, as the map has it.
    fn view(map: &SockMap, inodes: &[u64]) -> BTreeMap<u64, BTreeMap<i32, u32>> {
        inodes
            .iter()
            .map(|i| (*i, map.holders(*i).collect::<BTreeMap<_, _>>()))
            .filter(|(_, h)| !h.is_empty())
            .collect()
    }

    /// The same from a fresh walk.
    fn fresh(root: &Path, inodes: &[u64], pids: &[i32]) -> BTreeMap<u64, BTreeMap<i32, u32>> {
        let mut out: BTreeMap<u64, BTreeMap<i32, u32>> = BTreeMap::new();
        for_each_socket_fd(root, |pid, _, inode| {
            if inodes.contains(&inode) && pids.contains(&pid) {
                *out.entry(inode).or_default().entry(pid).or_default() += 1;
            }
        });
        out
    }

    fn gather(map: &mut SockMap, at: Instant, inodes: &[u64], only: Option<&[i32]>) {
        map.begin();
        for i in inodes {
            map.live(*i);
        }
        map.update_at(at, only);
    }

    /// Bytes the map's collections hold room for (their capacity).
    fn footprint(map: &SockMap) -> usize {
        use std::mem::size_of;
        let per_entry = |k: usize, v: usize| k + v + 1;
        map.procs
            .values()
            .map(|p| p.fds.capacity() * size_of::<Fd>())
            .sum::<usize>()
            + map.procs.capacity() * per_entry(4, size_of::<Proc>())
            + map.idx.map.capacity() * per_entry(4, size_of::<Entry>())
            + map.idx.unknown.capacity() * per_entry(4, 0)
            + map.dirty.capacity() * per_entry(4, 0)
            + (map.fds.capacity() * size_of::<Fd>() + map.nums.capacity() * 4)
    }

    /// A process that held 20,000 sockets and exited leaves no room for them behind.
    #[test]
    fn what_a_spike_grew_is_given_back() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 3, "socket:[5]");
        let mut map = SockMap::new(r, Duration::from_secs(600), true);
        let t0 = Instant::now();
        gather(&mut map, t0, &[5], None);
        let steady = footprint(&map);
        let many: Vec<u64> = (1000..21_000).collect();
        for (fd, inode) in (3..).zip(&many) {
            link(r, 11, fd, &format!("socket:[{inode}]"));
        }
        let mut live = many.clone();
        live.push(5);
        gather(&mut map, t0 + Duration::from_secs(1), &live, None);
        assert_eq!(map.holders(20_999).collect::<Vec<_>>(), [(11, 1)]);
        let peak = footprint(&map);
        assert!(peak > 20_000 * 16, "{peak}");
        std::fs::remove_dir_all(r.join("11")).unwrap();
        gather(&mut map, t0 + Duration::from_secs(2), &[5], None);
        assert_eq!(map.holders(5).collect::<Vec<_>>(), [(10, 1)]);
        let after = footprint(&map);
        assert!(
            after <= steady.max(16 * 1024),
            "steady {steady} B, peak {peak} B, after {after} B"
        );
        // A steady gather keeps its room (no reallocation every gather).
        gather(&mut map, t0 + Duration::from_secs(3), &[5], None);
        assert_eq!(footprint(&map), after);
    }

    #[test]
    fn a_new_directory_inode_with_the_same_start_time_is_the_same_process() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let stat = |dir: &str, start: u64| {
            // `cat (x) y` as the command name: the fields are counted from the last ')'.
            let line =
                format!("10 (cat (x) y) S 1 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0");
            std::fs::write(r.join(dir).join("stat"), line).unwrap();
        };
        link(r, 10, 3, "socket:[100]");
        stat("10", 4242);
        let t0 = Instant::now();
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        gather(&mut map, t0, &[100], None);
        assert_eq!(map.stats().full_reads, 1);
        // The same process, its proc dentry dropped: a new directory inode, the same start
        // time. (Made before the old one goes, so that the inode number differs.)
        let again = |name: &str, start: u64| {
            link(r, 1010, 3, "socket:[100]");
            stat("1010", start);
            std::fs::remove_dir_all(r.join(name)).unwrap();
            std::fs::rename(r.join("1010"), r.join(name)).unwrap();
        };
        again("10", 4242);
        gather(&mut map, t0 + Duration::from_secs(1), &[100], None);
        assert_eq!(map.stats().full_reads, 1, "not read again");
        // Another process under the pid: another start time.
        again("10", 4343);
        gather(&mut map, t0 + Duration::from_secs(2), &[100], None);
        assert_eq!(map.stats().full_reads, 2, "a reused pid is read in full");
        assert_eq!(map.holders(100).collect::<Vec<_>>(), [(10, 1)]);

        // The real file, against procfs's parser.
        let me = procfs::process::Process::myself().unwrap().stat().unwrap();
        let proc_root = std::fs::File::open("/proc").unwrap();
        assert_eq!(start_ticks(&proc_root, me.pid), Some(me.starttime));
    }

    #[test]
    fn a_reused_pid_is_read_again_and_the_schedule_bounds_staleness() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let live = [100, 200, 300];
        link(r, 10, 3, "socket:[100]");
        link(r, 10, 4, "socket:[200]");
        link(r, 11, 3, "socket:[200]");
        link(r, 11, 5, "/dev/null");
        link(r, 11, 6, "socket:[999]"); // not in the dump: another protocol
        let t0 = Instant::now();
        let period = Duration::from_secs(100);
        let mut map = SockMap::new(r, period, true);
        gather(&mut map, t0, &live, None);
        let all = [10, 11];
        assert_eq!(view(&map, &live), fresh(r, &live, &all));
        assert_eq!(map.fd_count(200), 2);
        assert_eq!(map.holders(200).count(), 2, "shared by two processes");
        assert_eq!(map.stats().full_reads, 2);
        // What `live` tells of the holders, valid while no holder changes.
        map.begin();
        let hints: Vec<_> = [100u64, 200, 300]
            .iter()
            .map(|i| map.live(*i).holder())
            .collect();
        let changes = map.changes();
        map.update_at(t0, None);
        assert_eq!(map.changes(), changes, "nothing changed");
        assert_eq!(hints, [Some(Some(10)), None, Some(None)]);

        // Pid 11 exits and a new process gets its pid: a new directory, other fds. Nothing
        // vanished from the dump and (a fixture dir's size is constant) no fd count moved:
        // only the directory's identity tells.
        // (Made before the old one goes, so that the file system cannot hand the new
        // directory the old one's inode number, as /proc never does.)
        link(r, 1011, 3, "socket:[300]");
        std::fs::remove_dir_all(r.join("11")).unwrap();
        std::fs::rename(r.join("1011"), r.join("11")).unwrap();
        gather(&mut map, t0 + Duration::from_secs(1), &live, None);
        assert_eq!(view(&map, &live), fresh(r, &live, &all));
        assert_eq!(map.holders(300).collect::<Vec<_>>(), [(11, 1)]);
        assert_eq!(map.fd_count(200), 1);

        // A change the map cannot see (same fd count, no socket gone or new): fd 4 of pid 10
        // now refers to socket 300 (dup2). Stale until pid 10's next full read, which the
        // schedule owes within the period.
        link(r, 10, 4, "socket:[300]");
        let mut t = t0 + Duration::from_secs(2);
        gather(&mut map, t, &live, None);
        assert_ne!(
            view(&map, &live),
            fresh(r, &live, &all),
            "stale (documented)"
        );
        let mut fixed = None;
        for step in 1..=12 {
            t += Duration::from_secs(10);
            gather(&mut map, t, &live, None);
            if view(&map, &live) == fresh(r, &live, &all) {
                fixed = Some(step * 10);
                break;
            }
        }
        let fixed = fixed.expect("never fixed");
        assert!(fixed <= 100 + 10, "fixed after {fixed} s, period 100 s");
    }

    #[test]
    fn a_hunt_reads_every_number_past_one_that_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 2, "/dev/null");
        link(r, 10, 3, "socket:[100]");
        link(r, 10, 6, "/dev/null");
        let t0 = Instant::now();
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        gather(&mut map, t0, &[100], None);
        // File 2 closed, a socket opened on file 6's number, a file on a new number: the
        // count is the same; the hunt's readlink of 2 fails, and 6 must still be read.
        std::fs::remove_file(r.join("10/fd/2")).unwrap();
        link(r, 10, 6, "socket:[300]");
        link(r, 10, 10, "/dev/null");
        gather(&mut map, t0, &[100, 300], None);
        assert_eq!(map.holders(300).collect::<Vec<_>>(), [(10, 1)]);
    }

    #[test]
    fn hunting_lists_a_process_whose_file_fd_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 3, "socket:[100]");
        link(r, 10, 5, "/dev/null");
        let t0 = Instant::now();
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        gather(&mut map, t0, &[100], None);
        // The file closed and a new socket on another number; a fixture directory's size does
        // not move, so only the hunt for socket 300 can find it: its readlink of fd 5 fails,
        // and the listing finds fd 6.
        std::fs::remove_file(r.join("10/fd/5")).unwrap();
        link(r, 10, 6, "socket:[300]");
        gather(&mut map, t0, &[100, 300], None);
        assert_eq!(map.holders(300).collect::<Vec<_>>(), [(10, 1)]);
        assert_eq!(map.stats().hunts, 1);
        // Without hunting it stays unowned until the full read.
        let mut plain = SockMap::new(r, Duration::from_secs(3600), false);
        link(r, 10, 6, "/dev/null");
        gather(&mut plain, t0, &[100], None);
        link(r, 10, 6, "socket:[300]");
        gather(&mut plain, t0, &[100, 300], None);
        assert_eq!(plain.holders(300).count(), 0);
        gather(
            &mut plain,
            t0 + Duration::from_secs(3601),
            &[100, 300],
            None,
        );
        assert_eq!(plain.holders(300).collect::<Vec<_>>(), [(10, 1)]);
    }

    #[test]
    fn hunting_is_spread_over_the_hunt_period() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // 60 processes, each holding a socket and a file.
        for pid in 1..=60 {
            link(r, pid, 3, &format!("socket:[{}]", 1000 + pid));
            link(r, pid, 5, "/dev/null");
        }
        let mut live: Vec<u64> = (1001..=1060).collect();
        let t0 = Instant::now();
        let mut t = t0;
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        gather(&mut map, t, &live, None);
        // Every 10 s the dump shows a socket none of them holds (another process's): each
        // gather hunts 60 × 10 s / HUNT_PERIOD processes, not all 60.
        let per_gather = 60 * 10 / HUNT_PERIOD.as_secs();
        assert!(per_gather < 60);
        for k in 0..3 {
            t += Duration::from_secs(10);
            live.push(5000 + k);
            let before = map.stats();
            gather(&mut map, t, &live, None);
            assert_eq!(map.stats().hunted - before.hunted, per_gather);
        }
        // A new socket that took the file's number in one process (its fd count unchanged)
        // is found within the hunt period.
        link(r, 42, 5, "socket:[7000]");
        live.push(7000);
        let mut found = None;
        for step in 1..=20 {
            t += Duration::from_secs(10);
            gather(&mut map, t, &live, None);
            if map.holders(7000).count() == 1 {
                found = Some(step * 10);
                break;
            }
        }
        let found = found.expect("never found");
        assert!(found <= HUNT_PERIOD.as_secs() + 10, "found after {found} s");
        // A process whose table moved (here: its socket closed) is hunted first, whatever
        // its turn.
        std::fs::remove_file(r.join("7/fd/3")).unwrap();
        live.retain(|i| *i != 1007);
        link(r, 7, 5, "socket:[7001]");
        live.push(7001);
        t += Duration::from_secs(10);
        gather(&mut map, t, &live, None);
        assert_eq!(map.holders(7001).collect::<Vec<_>>(), [(7, 1)]);
        // The other process's sockets are given up once every process was hunted for them:
        // no hunting once the dump shows no new one.
        for _ in 0..(HUNT_PERIOD.as_secs() / 10) {
            t += Duration::from_secs(10);
            gather(&mut map, t, &live, None);
        }
        let before = map.stats();
        t += Duration::from_secs(10);
        gather(&mut map, t, &live, None);
        assert_eq!(map.stats().hunts, before.hunts, "nothing left to look for");
        assert_eq!(map.holders(5000).count(), 0);
        assert_eq!(
            view(&map, &live),
            fresh(r, &live, &(1..=60).collect::<Vec<_>>())
        );
    }

    #[test]
    fn full_reads_are_spread_over_the_period() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for pid in 1..=20 {
            link(r, pid, 3, &format!("socket:[{}]", 1000 + pid));
        }
        let live: Vec<u64> = (1001..=1020).collect();
        let t0 = Instant::now();
        let mut map = SockMap::new(r, Duration::from_secs(100), false);
        gather(&mut map, t0, &live, None);
        assert_eq!(map.stats().full_reads, 20);
        // 20 processes, one full read each per 100 s: 2 per 10 s gather, never a burst.
        let mut per_gather = Vec::new();
        for k in 1..=20 {
            let before = map.stats().full_reads;
            gather(&mut map, t0 + Duration::from_secs(10 * k), &live, None);
            per_gather.push(map.stats().full_reads - before);
        }
        assert!(per_gather.iter().all(|n| *n == 2), "{per_gather:?}");
        // A zero period reads everything every time.
        let mut eager = SockMap::new(r, Duration::ZERO, false);
        gather(&mut eager, t0, &live, None);
        gather(&mut eager, t0, &live, None);
        assert_eq!(eager.stats().full_reads, 40);
    }

    #[test]
    fn unreadable_and_unowned() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 3, "socket:[100]");
        std::fs::create_dir_all(r.join("12")).unwrap(); // no fd/: unreadable
        let mut map = SockMap::new(r, Duration::from_secs(100), true);
        gather(&mut map, Instant::now(), &[100, 101], None);
        assert!(matches!(map.readable(10), Some(Ok(()))));
        assert!(matches!(map.readable(12), Some(Err(_))));
        assert!(map.readable(13).is_none());
        assert_eq!(map.holders(101).count(), 0, "held by nobody we can read");
        assert_eq!(map.fd_count(101), 0);
        // Only the listed pids are covered.
        let mut some = SockMap::new(r, Duration::from_secs(100), true);
        gather(&mut some, Instant::now(), &[100], Some(&[12]));
        assert!(some.readable(10).is_none());
        assert_eq!(some.holders(100).count(), 0);
    }

    // ---- real processes holding real sockets ----

    /// A python3 process (and its forks) holding loopback TCP sockets, each obeying commands
    /// written to its own FIFO `<dir>/<pid>` and answering on the shared stdout.
    const HOLDER: &str = r#"
import ctypes, os, socket, sys
d = sys.argv[1]
lst = socket.socket(); lst.bind(('127.0.0.1', 0)); lst.listen(1024)
port = lst.getsockname()[1]
def say(*words):
    # One write per line: the holders share stdout, and print() writes word by word when
    # Python runs unbuffered (PYTHONUNBUFFERED), which interleaves a parent's answer with
    # its fork's 'ready'.
    os.write(1, (' '.join(str(w) for w in words) + '\n').encode())
def conn():
    c = socket.create_connection(('127.0.0.1', port)); s, _ = lst.accept()
    return c.detach(), s.detach()
def serve():
    fifo = os.path.join(d, str(os.getpid()))
    os.mkfifo(fifo)
    say('ready', os.getpid())
    # Held open for reading and writing: never at EOF, so a command written just as the
    # previous one is answered waits in the pipe (reopening after each EOF could drop it).
    f = os.fdopen(os.open(fifo, os.O_RDWR), 'r')
    for line in f:
        w = line.split(); cmd, a = w[0], [int(x) for x in w[1:]]
        out = ''
        if cmd == 'conn':
            out = ' '.join('%d %d' % conn() for _ in range(a[0]))
        elif cmd == 'close':
            for fd in a: os.close(fd)
        elif cmd == 'file':
            out = str(os.open('/dev/null', os.O_RDONLY))
        elif cmd == 'dup2':
            os.dup2(a[0], a[1])
        elif cmd == 'fork':
            pid = os.fork()
            if pid == 0:
                ctypes.CDLL(None).prctl(1, 9)
                f.close()
                serve()
            out = str(pid)
        elif cmd == 'exit':
            say('ok exit'); os._exit(0)
        say('ok', cmd, out)
serve()
"#;

    /// How long a holder may take to answer (it answers in milliseconds).
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

    struct Holders {
        dir: tempfile::TempDir,
        main: crate::testing::KillOnDrop,
        /// The holders' output lines, read on a thread of their own: an answer that never
        /// comes fails the test after [`ANSWER_TIMEOUT`] instead of hanging it.
        out: std::sync::mpsc::Receiver<String>,
        pids: Vec<i32>,
        ready: BTreeSet<i32>,
        /// Every line read and command sent, for the message of a failure.
        log: Vec<String>,
    }

    impl Holders {
        fn start() -> Option<Holders> {
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("python3")
                .args(["-c", HOLDER])
                .arg(dir.path())
                .stdout(Stdio::piped())
                .spawn()
                .ok()?;
            let mut stdout = BufReader::new(child.stdout.take()?);
            let (tx, out) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut l = String::new();
                while stdout.read_line(&mut l).is_ok_and(|n| n > 0) {
                    if tx.send(std::mem::take(&mut l)).is_err() {
                        break;
                    }
                }
            });
            let mut h = Holders {
                dir,
                main: crate::testing::KillOnDrop(child),
                out,
                pids: Vec::new(),
                ready: BTreeSet::new(),
                log: Vec::new(),
            };
            let pid = h.main.id() as i32;
            h.wait_ready(pid);
            h.pids.push(pid);
            Some(h)
        }

        fn line(&mut self) -> String {
            use std::sync::mpsc::RecvTimeoutError;
            let l = match self.out.recv_timeout(ANSWER_TIMEOUT) {
                Ok(l) => l,
                Err(RecvTimeoutError::Disconnected) => panic!("holder exited"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the holders wrote nothing for {ANSWER_TIMEOUT:?}; so far: {:?}",
                        self.log
                    )
                }
            };
            self.log.push(l.trim_end().to_string());
            if let Some(p) = l.strip_prefix("ready ") {
                self.ready.insert(p.trim().parse().unwrap());
            }
            l
        }

        fn wait_ready(&mut self, pid: i32) {
            while !self.ready.contains(&pid) {
                self.line();
            }
        }

        /// Sends `cmd` to `pid`; returns the numbers of its answer.
        fn cmd(&mut self, pid: i32, cmd: &str) -> Vec<i64> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(self.dir.path().join(pid.to_string()))
                .unwrap();
            writeln!(f, "{cmd}").unwrap();
            drop(f);
            self.log.push(format!("> {pid} {cmd}"));
            let name = cmd.split_whitespace().next().unwrap_or_default();
            loop {
                let l = self.line();
                if let Some(rest) = l.strip_prefix(&format!("ok {name}")) {
                    return rest
                        .split_whitespace()
                        .map(|n| n.parse().unwrap())
                        .collect();
                }
            }
        }
    }

    impl Drop for Holders {
        fn drop(&mut self) {
            for pid in &self.pids {
                // SAFETY: signalling processes this test started (forks die with their parent
                // anyway: PR_SET_PDEATHSIG).
                unsafe { kill(*pid, 9) };
            }
        }
    }

    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }

    /// Inodes of the TCP and unix sockets of this network namespace, from /proc/net (the dump
    /// stand-in), that the holders hold: other processes' sockets (the rest of a test suite,
    /// a busy host) would make the map hunt at times the test does not choose. The holders
    /// change only on a command, so this is the dump they would give alone.
    fn live_inodes(h: &Holders) -> Vec<u64> {
        let mut held = FxHashSet::default();
        for_each_socket_fd(Path::new("/proc"), |pid, _, inode| {
            if h.pids.contains(&pid) {
                held.insert(inode);
            }
        });
        let mut out = Vec::new();
        for (file, col) in [("tcp", 9), ("tcp6", 9), ("unix", 6)] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
                continue;
            };
            for line in text.lines().skip(1) {
                if let Some(i) = line
                    .split_whitespace()
                    .nth(col)
                    .and_then(|c| c.parse().ok())
                    && i != 0
                    && held.contains(&i)
                {
                    out.push(i);
                }
            }
        }
        out
    }

    /// One gather of `map` over the holders, checked against a fresh walk.
    fn check(map: &mut SockMap, h: &Holders, at: Instant, what: &str) -> Stats {
        let before = map.stats();
        let live = live_inodes(h);
        gather(map, at, &live, Some(&h.pids));
        let root = Path::new("/proc");
        assert_eq!(view(map, &live), fresh(root, &live, &h.pids), "{what}");
        let after = map.stats();
        Stats {
            updates: 1,
            dirs_read: after.dirs_read - before.dirs_read,
            full_reads: after.full_reads - before.full_reads,
            readlinks: after.readlinks - before.readlinks,
            stats: after.stats - before.stats,
            hunts: after.hunts - before.hunts,
            hunted: after.hunted - before.hunted,
        }
    }

    #[test]
    fn the_kept_map_equals_a_fresh_walk_under_churn() {
        let Some(mut h) = Holders::start() else {
            crate::skip!("python3 not found (Debian package python3)");
        };
        let a = h.pids[0];
        let t0 = Instant::now();
        let mut t = t0;
        let mut tick = || {
            t += Duration::from_secs(1);
            t
        };
        // An hour's period: no scheduled full read during the test, so every change below
        // must be found by the incremental checks.
        let mut map = SockMap::new(Path::new("/proc"), Duration::from_secs(3600), true);
        let c = h.cmd(a, "conn 20");
        let s = check(&mut map, &h, tick(), "start");
        assert_eq!(s.full_reads, 1);

        // New sockets (the fd count moves).
        let more = h.cmd(a, "conn 3");
        let s = check(&mut map, &h, tick(), "three new connections");
        assert_eq!(s.full_reads, 0, "{s:?}");
        assert!(s.readlinks <= 8, "only the new fds: {s:?}");

        // Closed sockets (gone from the dump).
        h.cmd(a, &format!("close {} {}", more[0], more[1]));
        let s = check(&mut map, &h, tick(), "one connection closed");
        assert_eq!(s.full_reads, 0, "{s:?}");

        // An fd number reused by a new socket: close one end, open a connection whose first
        // fd takes the freed number (lowest free) — same fd count minus one plus two.
        h.cmd(a, &format!("close {}", c[0]));
        let reused = h.cmd(a, "conn 1");
        assert_eq!(reused[0], c[0], "the freed number is reused");
        let s = check(&mut map, &h, tick(), "fd number reused by a new socket");
        assert_eq!(s.full_reads, 0, "{s:?}");

        // Same fd count, a socket replacing a file at its number: only hunting finds it.
        let file = h.cmd(a, "file")[0];
        check(&mut map, &h, tick(), "a file opened");
        h.cmd(a, &format!("close {file} {}", c[2]));
        let swapped = h.cmd(a, "conn 1");
        assert!(swapped.contains(&file), "{swapped:?} reuses {file}");
        let s = check(&mut map, &h, tick(), "file replaced by a socket");
        assert_eq!((s.full_reads, s.hunts), (0, 1), "{s:?}");

        // A fork shares every socket.
        let b = h.cmd(a, "fork")[0] as i32;
        h.wait_ready(b);
        h.pids.push(b);
        let s = check(&mut map, &h, tick(), "forked child shares the sockets");
        assert_eq!(s.full_reads, 1, "the new process only: {s:?}");
        assert_eq!(map.holders(live_inode_of(a, c[4])).count(), 2);

        // The child closes a shared socket (alive in the parent: nothing leaves the dump).
        h.cmd(b, &format!("close {}", c[4]));
        let s = check(&mut map, &h, tick(), "child closed a shared socket");
        assert_eq!(s.full_reads, 0, "{s:?}");
        assert_eq!(map.holders(live_inode_of(a, c[4])).count(), 1);

        // The child exits.
        h.cmd(b, "exit");
        // A zombie (its parent does not reap it) with no fds left, or gone.
        crate::testing::wait_for("the child to exit", Duration::from_secs(10), || {
            std::fs::read_dir(format!("/proc/{b}/fd")).map_or(true, |d| d.count() == 0)
        });
        check(&mut map, &h, tick(), "child exited");
        h.pids.retain(|p| *p != b);

        // A dup2 over one fd of a shared socket (alive in the parent) is seen at once: fds of
        // sockets held more than once are read again every gather.
        let b2 = h.cmd(a, "fork")[0] as i32;
        h.wait_ready(b2);
        h.pids.push(b2);
        check(&mut map, &h, tick(), "second child");
        h.cmd(b2, &format!("dup2 {} {}", c[6], c[7]));
        let s = check(&mut map, &h, tick(), "dup2 over a shared socket");
        assert!(
            s.full_reads >= 1,
            "the confirmation read the child again: {s:?}"
        );

        // Beyond the bound: an fd that comes to refer to a known socket in place of a file
        // (same fd count, nothing joins or leaves the dump) — fixed by the next full read.
        let file = h.cmd(b2, "file")[0];
        check(&mut map, &h, tick(), "a file opened in the child");
        h.cmd(b2, &format!("dup2 {} {file}", c[8]));
        map.begin();
        let live = live_inodes(&h);
        for i in &live {
            map.live(*i);
        }
        map.update_at(tick(), Some(&h.pids));
        assert_ne!(
            view(&map, &live),
            fresh(Path::new("/proc"), &live, &h.pids),
            "an fd moved onto a known socket is only seen at the next full read"
        );
        let later = t0 + Duration::from_secs(3600 * 2);
        let s = check(&mut map, &h, later, "after the period");
        assert!(s.full_reads >= 1, "{s:?}");
    }

    /// The inode of `pid`'s fd `fd`.
    fn live_inode_of(pid: i32, fd: i64) -> u64 {
        let t = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        parse_socket_link(t.to_string_lossy().as_bytes()).unwrap()
    }

    #[test]
    fn confirm_drops_credits_a_process_no_longer_holds() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 3, "socket:[100]");
        link(r, 10, 4, "socket:[200]");
        link(r, 11, 4, "socket:[200]");
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        let t0 = Instant::now();
        gather(&mut map, t0, &[100, 200], None);
        // Pid 11's fd 4 moves to socket 100 behind the map's back (dup2): socket 200 was held
        // twice, so its fds are read again by the update itself.
        link(r, 11, 4, "socket:[100]");
        gather(&mut map, t0, &[100, 200], None);
        assert_eq!(map.holders(200).collect::<Vec<_>>(), [(10, 1)]);
        assert_eq!(map.holders(100).collect::<BTreeMap<_, _>>().len(), 2);
        // A socket of one fd handed on (alive, say, in flight) while its fd now refers to
        // another: only an explicit confirmation (procstat's CLOSE_WAIT) sees it before the
        // full read.
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        link(r, 10, 3, "socket:[100]");
        let mut map = SockMap::new(r, Duration::from_secs(3600), true);
        gather(&mut map, t0, &[100], None);
        link(r, 10, 3, "socket:[300]");
        gather(&mut map, t0, &[100, 300], None);
        assert_eq!(map.holders(100).count(), 1, "stale before the confirmation");
        map.confirm(&[100]);
        assert_eq!(map.holders(100).count(), 0);
        assert_eq!(map.holders(300).collect::<Vec<_>>(), [(10, 1)]);
    }
}
