//! The live client connections: what each is doing (a request in flight, or idle since when),
//! which one to evict at the cap, and the signals that close them (eviction, shutdown).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use crate::log_throttle::Throttle;

/// Why a connection is asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    /// Not asked.
    No = 0,
    /// Evicted to make room at the cap: close if still idle.
    Evict = 1,
    /// The server is shutting down: close when idle.
    Drain = 2,
}

/// One client connection's state, shared by its task, its requests and the registry.
#[derive(Debug)]
pub(super) struct ConnState {
    epoch: Instant,
    /// Requests whose head arrived.
    started: AtomicU64,
    /// Requests whose response ended (or was abandoned).
    ended: AtomicU64,
    /// When it last became idle (accepted, or a response ended), ms after `epoch`.
    idle_since_ms: AtomicU64,
    /// Since when a write to the client has been blocked (its receive window full), ms after
    /// `epoch`; 0 while writes go through.
    write_blocked_since_ms: AtomicU64,
    closing: AtomicU8,
    /// Wakes the connection's task when `closing` is set.
    pub(super) wake: Notify,
}

impl ConnState {
    fn new(epoch: Instant, now_ms: u64) -> ConnState {
        ConnState {
            epoch,
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            write_blocked_since_ms: AtomicU64::new(0),
            closing: AtomicU8::new(Closing::No as u8),
            wake: Notify::new(),
        }
    }

    /// Milliseconds since the registry's epoch.
    pub(super) fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    /// The instant `ms` after the epoch.
    pub(super) fn instant_at(&self, ms: u64) -> Instant {
        self.epoch + std::time::Duration::from_millis(ms)
    }

    /// A request head arrived.
    pub(super) fn request_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A response ended, or its request was abandoned.
    pub(super) fn request_ended(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.ended.fetch_add(1, Ordering::Release);
    }

    /// A write to the client could not go through (the first of a run is noted).
    pub(super) fn write_blocked(&self) {
        if self.write_blocked_since_ms.load(Ordering::Relaxed) == 0 {
            self.write_blocked_since_ms
                .store(self.now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// A write to the client went through. After a blocked one this is progress by a slow
    /// reader: the idle allowance starts again (a response hyper still flushes after its body
    /// ended is not idleness).
    pub(super) fn write_went_through(&self) {
        if self.write_blocked_since_ms.load(Ordering::Relaxed) != 0 {
            self.write_blocked_since_ms.store(0, Ordering::Relaxed);
            self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request is in flight.
    pub(super) fn is_busy(&self) -> bool {
        self.ended.load(Ordering::Acquire) != self.started.load(Ordering::Relaxed)
    }

    /// No complete request head has arrived yet.
    pub(super) fn never_served(&self) -> bool {
        self.started.load(Ordering::Relaxed) == 0
    }

    fn idle_since_ms(&self) -> u64 {
        self.idle_since_ms.load(Ordering::Relaxed)
    }

    /// Why it was asked to close.
    pub(super) fn closing(&self) -> Closing {
        match self.closing.load(Ordering::Acquire) {
            1 => Closing::Evict,
            2 => Closing::Drain,
            _ => Closing::No,
        }
    }

    /// An eviction found it busy after all: it may be chosen again later.
    pub(super) fn spare(&self) {
        let _ = self.closing.compare_exchange(
            Closing::Evict as u8,
            Closing::No as u8,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    fn ask(&self, why: Closing) {
        self.closing.fetch_max(why as u8, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// What its timer should do at `now_ms`. A connection has `header_read_ms` from accept to its
    /// first request head and `keep_alive_ms` from the end of each response to the next head. A
    /// request in flight is never timed out here, unless the client stopped reading: writes
    /// blocked for `keep_alive_ms` close the connection, busy or not.
    pub(super) fn check(&self, now_ms: u64, header_read_ms: u64, keep_alive_ms: u64) -> Check {
        let blocked_since = self.write_blocked_since_ms.load(Ordering::Relaxed);
        if blocked_since != 0 {
            return due(now_ms, blocked_since.saturating_add(keep_alive_ms));
        }
        if self.is_busy() {
            return Check::At(now_ms.saturating_add(keep_alive_ms));
        }
        let allowed = if self.never_served() {
            header_read_ms
        } else {
            keep_alive_ms
        };
        due(now_ms, self.idle_since_ms().saturating_add(allowed))
    }
}

fn due(now_ms: u64, deadline: u64) -> Check {
    if now_ms >= deadline {
        Check::Close
    } else {
        Check::At(deadline)
    }
}

/// The outcome of [`ConnState::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Idle past its allowance: close it.
    Close,
    /// Look again at this time (ms after the epoch).
    At(u64),
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Every live connection, oldest first.
#[derive(Debug)]
pub(super) struct Registry {
    max: usize,
    epoch: Instant,
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    next_id: u64,
    by_id: BTreeMap<u64, Arc<ConnState>>,
}

/// A connection's place in the registry; dropping it (the connection task ended, or was
/// aborted) frees the place.
#[derive(Debug)]
pub(super) struct Registration {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Registration {
    /// The connection's state.
    pub(super) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().by_id.remove(&self.id);
    }
}

impl Registry {
    /// A registry admitting up to `max` connections.
    pub(super) fn new(max: usize) -> Registry {
        Registry {
            max,
            epoch: Instant::now(),
            live: Mutex::new(Live::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        // Each critical section is one map operation: a panic cannot leave it half done.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection. At the cap an idle connection is evicted to make room;
    /// `None` when every connection is busy (the newcomer is refused).
    pub(super) fn admit(self: &Arc<Self>) -> Option<Registration> {
        let now_ms = millis_since(self.epoch);
        let mut live = self.lock();
        if live.by_id.len() >= self.max {
            let victim = choose_victim(live.by_id.values())?;
            victim.ask(Closing::Evict);
            static EVICTED: Throttle = Throttle::per_minute();
            if let Some(count) = EVICTED.hit() {
                tracing::warn!(
                    max_connections = self.max,
                    count,
                    "connection cap reached: idle connections evicted to admit new ones"
                );
            }
        }
        let id = live.next_id;
        live.next_id += 1;
        let state = Arc::new(ConnState::new(self.epoch, now_ms));
        live.by_id.insert(id, state.clone());
        Some(Registration {
            registry: self.clone(),
            id,
            state,
        })
    }

    /// Evicts one idle connection, if there is one (to free a file descriptor).
    pub(super) fn evict_one(&self) -> bool {
        let live = self.lock();
        match choose_victim(live.by_id.values()) {
            Some(victim) => {
                victim.ask(Closing::Evict);
                true
            }
            None => false,
        }
    }

    /// Asks every connection to close once idle (shutdown).
    pub(super) fn drain(&self) {
        for state in self.lock().by_id.values() {
            state.ask(Closing::Drain);
        }
    }

    /// Connections open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

/// The connection to evict, from `conns` oldest first: never one with a request in flight or
/// already asked to close; the oldest that never completed a request head (a slow-loris, or a
/// client that connected ahead of need), else the one idle the longest.
fn choose_victim<'a>(conns: impl Iterator<Item = &'a Arc<ConnState>>) -> Option<&'a Arc<ConnState>> {
    let mut longest_idle: Option<&Arc<ConnState>> = None;
    for conn in conns {
        if conn.is_busy() || conn.closing() != Closing::No {
            continue;
        }
        if conn.never_served() {
            return Some(conn);
        }
        if longest_idle.is_none_or(|best| conn.idle_since_ms() < best.idle_since_ms()) {
            longest_idle = Some(conn);
        }
    }
    longest_idle
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn conn(idle_since_ms: u64) -> Arc<ConnState> {
        Arc::new(ConnState::new(Instant::now(), idle_since_ms))
    }

    fn served(conn: &ConnState, idle_since_ms: u64) {
        conn.request_started();
        conn.request_ended();
        conn.idle_since_ms.store(idle_since_ms, Ordering::Relaxed);
    }

    #[test]
    fn the_victim_is_the_oldest_that_never_sent_a_head_then_the_longest_idle_never_a_busy_one() {
        let (a, b, c, d) = (conn(0), conn(1), conn(2), conn(3));
        served(&a, 50);
        b.request_started(); // in flight
        served(&c, 40);
        let all = [a.clone(), b.clone(), c.clone(), d.clone()];
        assert!(
            Arc::ptr_eq(choose_victim(all.iter()).unwrap(), &d),
            "never served beats idle"
        );
        d.ask(Closing::Evict);
        assert!(
            Arc::ptr_eq(choose_victim(all.iter()).unwrap(), &c),
            "then the longest idle"
        );
        c.ask(Closing::Drain);
        a.request_started();
        assert!(
            choose_victim(all.iter()).is_none(),
            "busy or closing ones are never chosen"
        );
        a.request_ended();
        assert!(Arc::ptr_eq(choose_victim(all.iter()).unwrap(), &a));
    }

    #[test]
    fn an_eviction_that_finds_the_connection_busy_is_withdrawn() {
        let a = conn(0);
        a.ask(Closing::Evict);
        assert_eq!(a.closing(), Closing::Evict);
        a.spare();
        assert_eq!(a.closing(), Closing::No);
        a.ask(Closing::Drain);
        a.spare();
        assert_eq!(a.closing(), Closing::Drain, "a shutdown is never withdrawn");
        a.ask(Closing::Evict);
        assert_eq!(a.closing(), Closing::Drain, "nor weakened");
    }

    #[test]
    fn timers_header_read_from_accept_keep_alive_after_a_response_none_in_flight() {
        let (header, keep_alive) = (10_000, 60_000);
        let c = conn(1_000);
        assert_eq!(c.check(5_000, header, keep_alive), Check::At(11_000));
        assert_eq!(c.check(11_000, header, keep_alive), Check::Close, "no head within 10 s");
        c.request_started();
        assert_eq!(
            c.check(500_000, header, keep_alive),
            Check::At(560_000),
            "in flight: never closed"
        );
        c.request_ended();
        c.idle_since_ms.store(600_000, Ordering::Relaxed);
        assert_eq!(c.check(600_001, header, keep_alive), Check::At(660_000));
        assert_eq!(c.check(660_000, header, keep_alive), Check::Close, "idle for 60 s");
    }

    #[test]
    fn a_client_that_stops_reading_its_response_is_closed_after_the_keep_alive_allowance() {
        let c = conn(0);
        c.request_started();
        c.write_blocked_since_ms.store(1_000, Ordering::Relaxed);
        c.write_blocked(); // a later blocked write keeps the first time
        assert_eq!(c.check(30_000, 10_000, 60_000), Check::At(61_000));
        assert_eq!(c.check(61_000, 10_000, 60_000), Check::Close);
        c.write_went_through();
        assert!(
            matches!(c.check(61_000, 10_000, 60_000), Check::At(_)),
            "it reads again"
        );
        c.request_ended();
        c.idle_since_ms.store(70_000, Ordering::Relaxed);
        c.write_blocked_since_ms.store(71_000, Ordering::Relaxed);
        assert_eq!(
            c.check(130_500, 10_000, 60_000),
            Check::At(131_000),
            "still flushing: not idle"
        );
        c.write_went_through();
        assert_ne!(
            c.idle_since_ms(),
            70_000,
            "progress restarts the idle allowance (from now)"
        );
    }

    #[test]
    fn at_the_cap_an_idle_connection_is_evicted_and_with_all_busy_the_newcomer_is_refused() {
        let registry = Arc::new(Registry::new(2));
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        let third = registry.admit().expect("the idle first connection makes room");
        assert_eq!(first.state().closing(), Closing::Evict);
        assert_eq!(second.state().closing(), Closing::No);
        drop(first);
        second.state().request_started();
        third.state().request_started();
        assert!(registry.admit().is_none(), "every connection busy");
        assert_eq!(registry.len(), 2);
        drop((second, third));
        assert_eq!(registry.len(), 0);
    }
}
