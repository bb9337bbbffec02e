//! The connection table: who holds the node's connection slots, and who gives one up when they
//! run out.
//!
//! Slots used to be a plain semaphore, so whoever opened `max_connections` connections first
//! kept everyone else out — health checks included — for as long as it sent a request now and
//! then. Now every connection is admitted here and the policy is:
//!
//! * a connection is **unproven** from accept until a request on it is authorized as a user of
//!   the ledger (the gate marks the response with [`ledger_http::Authenticated`]); then it is
//!   **authenticated** for the rest of its life;
//! * unproven connections share `max_connections - reserved` slots, at most
//!   `max_unauthenticated_per_ip` of them from one IP address, so the last `reserved` slots
//!   always go to connections whose caller has proven who it is;
//! * when a newcomer finds its pool full, the connection that has been **idle** longest (no
//!   request in progress; a connection still in its handshake, or one that never sent a
//!   request, is idle since it was accepted) is evicted in its favour — an unproven one first.
//!   Only when every candidate is busy is the newcomer refused (closed at once).
//!
//! Eviction frees the slot at once (the evicted connection's task is told to close and no
//! longer counts), so the table never holds more than `max_connections` live entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How the slots are shared (validated by the configuration: `reserved < max_connections`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotPolicy {
    pub max_connections: usize,
    /// Slots only authenticated connections may hold.
    pub reserved_for_authenticated: usize,
    /// Unproven connections one IP address may hold.
    pub max_unauthenticated_per_ip: usize,
}

impl SlotPolicy {
    fn unproven_capacity(&self) -> usize {
        self.max_connections
            .saturating_sub(self.reserved_for_authenticated)
            .max(1)
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already holds its share of unproven slots, all busy.
    PerAddressLimit,
    /// Every slot it may use is held by a connection with a request in progress.
    AllBusy,
}

/// One connection's shared state: the table reads it to pick a victim, the connection's task
/// and its requests update it.
pub(crate) struct Connection {
    id: u64,
    ip: IpAddr,
    born: Instant,
    in_flight: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// When the last request started or ended, in ms since `born`.
    last_activity_ms: AtomicU64,
    authenticated: AtomicBool,
    /// Set (with a notification) when the table evicts it.
    evicted: AtomicBool,
    eviction: Notify,
    /// A request's body was left unread when its answer was sent: when the connection ends,
    /// close it lingering (see `linger`), or the client may never read that answer.
    unread_body: AtomicBool,
    pub responses: crate::guard::ResponseMeter,
}

impl Connection {
    fn new(id: u64, ip: IpAddr) -> Connection {
        Connection {
            id,
            ip,
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            authenticated: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            eviction: Notify::new(),
            unread_body: AtomicBool::new(false),
            responses: crate::guard::ResponseMeter::default(),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn ms_since_born(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.ms_since_born(), Ordering::Relaxed);
    }

    /// Counts a request as in progress until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    pub fn has_had_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// When it last did something (accepted, or a request started or ended).
    fn last_activity(&self) -> Instant {
        self.born + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// When it has been idle for `idle_timeout`, if it is idle now.
    pub fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        self.is_idle().then(|| self.last_activity() + idle_timeout)
    }

    pub fn note_unread_body(&self) {
        self.unread_body.store(true, Ordering::Relaxed);
    }

    pub fn has_unread_body(&self) -> bool {
        self.unread_body.load(Ordering::Relaxed)
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Completes once the table has evicted this connection.
    pub async fn evicted(&self) {
        loop {
            let notified = self.eviction.notified();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }
}

/// A request in progress on a connection (see [`Connection::request_started`]).
pub(crate) struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Table {
    next_id: u64,
    live: HashMap<u64, Arc<Connection>>,
    unproven: usize,
    unproven_per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn forget(&mut self, connection: &Connection) {
        if self.live.remove(&connection.id).is_none() {
            return; // evicted earlier: its counts are gone already
        }
        if !connection.is_authenticated() {
            self.unproven_left(connection.ip);
        }
    }

    fn unproven_left(&mut self, ip: IpAddr) {
        self.unproven -= 1;
        if let Some(n) = self.unproven_per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.unproven_per_ip.remove(&ip);
            }
        }
    }

    /// The idle connection that has been idle longest among those `eligible` accepts.
    fn longest_idle(&self, eligible: impl Fn(&Connection) -> bool) -> Option<Arc<Connection>> {
        self.live
            .values()
            .filter(|c| c.is_idle() && eligible(c))
            .min_by_key(|c| c.last_activity())
            .cloned()
    }

    fn evict(&mut self, victim: &Arc<Connection>) {
        self.forget(victim);
        victim.evicted.store(true, Ordering::Relaxed);
        victim.eviction.notify_one();
    }
}

/// The node's connections (see the module documentation).
pub(crate) struct Connections {
    policy: SlotPolicy,
    table: Mutex<Table>,
}

/// A slot held by a live connection; dropping it gives the slot back.
pub(crate) struct Slot {
    connections: Arc<Connections>,
    pub connection: Arc<Connection>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().forget(&self.connection);
    }
}

impl Connections {
    pub fn new(policy: SlotPolicy) -> Arc<Connections> {
        Arc::new(Connections {
            policy,
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip` (evicting an idle one if that is what it takes), or says
    /// why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut table = self.lock();
        let policy = self.policy;
        if table.unproven_per_ip.get(&ip).copied().unwrap_or(0) >= policy.max_unauthenticated_per_ip
        {
            let victim = table
                .longest_idle(|c| c.ip == ip && !c.is_authenticated())
                .ok_or(Refusal::PerAddressLimit)?;
            table.evict(&victim);
        }
        if table.unproven >= policy.unproven_capacity() {
            let victim = table
                .longest_idle(|c| !c.is_authenticated())
                .ok_or(Refusal::AllBusy)?;
            table.evict(&victim);
        }
        if table.live.len() >= policy.max_connections {
            let victim = table
                .longest_idle(|c| !c.is_authenticated())
                .or_else(|| table.longest_idle(|_| true))
                .ok_or(Refusal::AllBusy)?;
            table.evict(&victim);
        }
        table.next_id += 1;
        let connection = Arc::new(Connection::new(table.next_id, ip));
        table.live.insert(connection.id, connection.clone());
        table.unproven += 1;
        *table.unproven_per_ip.entry(ip).or_insert(0) += 1;
        debug_assert!(table.live.len() <= policy.max_connections);
        debug_assert!(table.unproven <= policy.unproven_capacity());
        Ok(Slot {
            connections: self.clone(),
            connection,
        })
    }

    /// Marks `connection` authenticated: it leaves the unproven pool (and may use the reserve).
    pub fn authenticated(&self, connection: &Connection) {
        if connection.authenticated.load(Ordering::Relaxed) {
            return;
        }
        let mut table = self.lock();
        // Under the lock, so `forget` sees a consistent flag.
        if connection.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        if table.live.contains_key(&connection.id) {
            table.unproven_left(connection.ip);
        }
    }

    /// Live connections, and how many of them are unproven.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.live.len(), table.unproven)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, reserved: usize, per_ip: usize) -> Arc<Connections> {
        Connections::new(SlotPolicy {
            max_connections: max,
            reserved_for_authenticated: reserved,
            max_unauthenticated_per_ip: per_ip,
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_connection() {
        let table = policy(3, 0, 10);
        let first = table.admit(ip(1)).unwrap();
        let second = table.admit(ip(1)).unwrap();
        let third = table.admit(ip(2)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // The oldest becomes the most recently active: the second is now idle longest.
        drop(first.connection.request_started());
        let fourth = table.admit(ip(3)).unwrap();
        assert!(second.connection.is_evicted());
        assert!(!first.connection.is_evicted() && !third.connection.is_evicted());
        assert_eq!(table.counts(), (3, 3));
        drop(second); // the evicted connection's task ending changes nothing more
        assert_eq!(table.counts(), (3, 3));
        drop((first, third, fourth));
        assert_eq!(table.counts(), (0, 0));
    }

    #[test]
    fn busy_connections_are_never_evicted() {
        let table = policy(2, 0, 10);
        let a = table.admit(ip(1)).unwrap();
        let b = table.admit(ip(2)).unwrap();
        let _busy_a = a.connection.request_started();
        let _busy_b = b.connection.request_started();
        assert_eq!(table.admit(ip(3)).err(), Some(Refusal::AllBusy));
        assert!(!a.connection.is_evicted() && !b.connection.is_evicted());
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_unproven_slots() {
        let table = policy(10, 0, 2);
        let a = table.admit(ip(1)).unwrap();
        let b = table.admit(ip(1)).unwrap();
        let _busy_a = a.connection.request_started();
        // A third from the same address evicts its own idle one, not another address's.
        let other = table.admit(ip(2)).unwrap();
        let c = table.admit(ip(1)).unwrap();
        assert!(b.connection.is_evicted() && !other.connection.is_evicted());
        let _busy_c = c.connection.request_started();
        assert_eq!(table.admit(ip(1)).err(), Some(Refusal::PerAddressLimit));
        // Once authenticated, a connection no longer counts against its address.
        table.authenticated(&a.connection);
        assert!(table.admit(ip(1)).is_ok());
    }

    #[test]
    fn the_reserve_is_kept_for_authenticated_connections() {
        let table = policy(4, 2, 10);
        let proven = table.admit(ip(1)).unwrap();
        table.authenticated(&proven.connection);
        let _proven_busy = proven.connection.request_started();
        let u1 = table.admit(ip(2)).unwrap();
        let u2 = table.admit(ip(3)).unwrap();
        let _b1 = u1.connection.request_started();
        let _b2 = u2.connection.request_started();
        // Two unproven slots (4 - 2 reserved), both busy: a third unproven is refused although
        // a slot is free...
        assert_eq!(table.admit(ip(4)).err(), Some(Refusal::AllBusy));
        // ...and an idle authenticated connection is never evicted for an unproven newcomer
        // while the unproven pool is the limit.
        assert!(!proven.connection.is_evicted());
        assert_eq!(table.counts(), (3, 2));
    }

    #[test]
    fn authenticating_twice_or_after_eviction_keeps_counts_right() {
        let table = policy(1, 0, 1);
        let a = table.admit(ip(1)).unwrap();
        let b = table.admit(ip(1)).unwrap(); // evicts a
        assert!(a.connection.is_evicted());
        table.authenticated(&a.connection);
        table.authenticated(&b.connection);
        table.authenticated(&b.connection);
        assert_eq!(table.counts(), (1, 0));
        drop((a, b));
        assert_eq!(table.counts(), (0, 0));
    }
}
