//! Which connections the receiver serves. A connection is *pending* from accept until one of
//! its requests carries the token, then *authenticated*. Pending connections are what an
//! attacker without the token can open, so they are the ones that give way:
//!
//! - at most `per_ip` connections per peer address; at the cap, the peer's oldest pending
//!   connection is closed to admit the new one (refused only when all of them are
//!   authenticated);
//! - at most `max_pending` pending connections in all; at the cap the oldest is closed;
//! - at most `max_total` connections in all; at the cap the oldest pending one is closed, and
//!   only when every connection is authenticated is the new one refused.
//!
//! So slow or idle connections without the token can never keep a writer that has it out: a
//! new connection always gets in, and it has the header timeout (measured from accept, or
//! from its last request while pending) to prove itself. A pending connection lives only until
//! `max_pending` newer ones arrive, which an attacker can make short, but a writer sends its
//! head as soon as it connects.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_total: usize,
    pub max_pending: usize,
    pub per_ip: usize,
}

/// The registry of open connections.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    inner: Mutex<Inner>,
    /// Pending connections closed to make room, since the start.
    pub evicted: AtomicU64,
    /// Connections refused (every slot authenticated), since the start.
    pub refused: AtomicU64,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// By age: the smallest id is the oldest.
    conns: BTreeMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    pending: usize,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    authenticated: bool,
    evict: Arc<Notify>,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Notified when the connection is closed to make room for a newer one.
    pub evicted: Arc<Notify>,
    authenticated: AtomicBool,
    /// Milliseconds since `epoch` of the last request head received.
    last_request_ms: AtomicU64,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            inner: Mutex::new(Inner::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Admits a connection from `ip`, closing older pending ones as needed; `None` when every
    /// slot it could take is held by an authenticated connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Ticket>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let l = self.limits;
        if g.per_ip.get(&ip).copied().unwrap_or(0) >= l.per_ip
            && !self.evict_oldest(&mut g, Some(ip))
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if g.pending >= l.max_pending {
            self.evict_oldest(&mut g, None);
        }
        if g.conns.len() >= l.max_total && !self.evict_oldest(&mut g, None) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = g.next_id;
        g.next_id += 1;
        let evict = Arc::new(Notify::new());
        g.conns.insert(
            id,
            Entry {
                ip,
                authenticated: false,
                evict: evict.clone(),
            },
        );
        *g.per_ip.entry(ip).or_default() += 1;
        g.pending += 1;
        Some(Arc::new(Ticket {
            admission: self.clone(),
            id,
            evicted: evict,
            authenticated: AtomicBool::new(false),
            last_request_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
        }))
    }

    /// Closes the oldest pending connection (of `ip` when given); false when there is none.
    fn evict_oldest(&self, g: &mut Inner, ip: Option<IpAddr>) -> bool {
        let Some(id) = g
            .conns
            .iter()
            .find(|(_, e)| !e.authenticated && ip.is_none_or(|ip| e.ip == ip))
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(e) = remove(g, id) {
            // notify_one keeps the permit if the connection is not waiting yet.
            e.evict.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Connections open now: (pending, authenticated).
    pub fn open(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.pending, g.conns.len() - g.pending)
    }
}

fn remove(g: &mut Inner, id: u64) -> Option<Entry> {
    let e = g.conns.remove(&id)?;
    if let Some(n) = g.per_ip.get_mut(&e.ip) {
        *n -= 1;
        if *n == 0 {
            g.per_ip.remove(&e.ip);
        }
    }
    if !e.authenticated {
        g.pending -= 1;
    }
    Some(e)
}

impl Ticket {
    /// Marks the connection authenticated (a request carried the token): it no longer gives
    /// way to newer connections.
    pub fn authenticate(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut g = self
            .admission
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = g.conns.get_mut(&self.id)
            && !e.authenticated
        {
            e.authenticated = true;
            g.pending -= 1;
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Records that a request head arrived (restarts a pending connection's header timeout).
    pub fn request_seen(&self) {
        let now = self.admission.epoch.elapsed().as_millis() as u64;
        self.last_request_ms.store(now, Ordering::Relaxed);
    }

    /// When the last request head arrived (or the connection was accepted).
    pub fn last_request(&self) -> Instant {
        let ms = self.last_request_ms.load(Ordering::Relaxed);
        self.admission.epoch + std::time::Duration::from_millis(ms)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self
            .admission
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        remove(&mut g, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn pending_connections_give_way_authenticated_ones_do_not() {
        let a = Admission::new(Limits {
            max_total: 4,
            max_pending: 3,
            per_ip: 2,
        });
        let t1 = a.admit(ip(1)).unwrap();
        let t2 = a.admit(ip(1)).unwrap();
        // Per peer: the third from ip 1 closes ip 1's oldest pending (t1).
        let t3 = a.admit(ip(1)).unwrap();
        assert_eq!(a.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(a.open(), (2, 0));
        t2.authenticate();
        t3.authenticate();
        // Both of ip 1's are authenticated: a third is refused.
        assert!(a.admit(ip(1)).is_none());
        assert_eq!(a.refused.load(Ordering::Relaxed), 1);
        // Pending cap (3) across peers: the fourth pending closes the oldest pending.
        let p: Vec<_> = (2..6).map(|n| a.admit(ip(n))).collect();
        assert!(p.iter().all(Option::is_some));
        assert_eq!(a.open(), (2, 2), "total cap 4: 2 authenticated + 2 pending");
        drop(t1);
        drop(p);
        assert_eq!(a.open(), (0, 2));
        drop((t2, t3));
        assert_eq!(a.open(), (0, 0));
        assert!(a.inner.lock().unwrap().per_ip.is_empty());
    }
}
