//! `listener::registry`: the open connections of one listener, oldest first, counted against
//! `max_connections`. At the cap a new connection does not simply wait: the oldest connection
//! doing nothing (no call in flight — silent, stalled mid-frame, or idle keep-alive) is shed
//! to make room, so sockets that never send a request cannot lock a listener out. Only when
//! every connection is busy does the new one wait (in the accept loop, as before).
//!
//! Sits in the accept phase: [`Registry::register`] runs after `accept`, before the
//! connection's task starts; the [`Slot`] it returns lives as long as the connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Client-cancelled calls (h2 RST_STREAM before the answer) a connection may make in a burst
/// before it is told to go away (HTTP/2 rapid reset, CVE-2023-44487).
pub(crate) const RESET_BURST: f64 = 32.0;

/// Client-cancelled calls per second a connection may make in the long run.
pub(crate) const RESET_REFILL_PER_SEC: f64 = 8.0;

/// How often a waiting registration looks again for a connection that became idle (a
/// connection going idle does not notify; one closing does).
const RECHECK: Duration = Duration::from_millis(50);

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Registry {
    cap: usize,
    state: Mutex<State>,
    freed: Notify,
    /// The origin of each connection's `idle_since` (milliseconds after it).
    base: Instant,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// By id, which is the order of arrival: the first entry is the oldest.
    conns: BTreeMap<u64, Arc<Shared>>,
    /// Connections shed since the listener started.
    shed: u64,
}

/// What a connection shares with its registry.
#[derive(Debug, Default)]
struct Shared {
    /// Cancelled when the connection is shed.
    shed: CancellationToken,
    /// Calls (requests) in flight; a connection with none may be shed.
    busy: AtomicUsize,
    /// Whether any call arrived yet.
    served: AtomicBool,
    /// When the last call ended (or the connection registered), in ms after the base.
    idle_since: AtomicU64,
    /// The budget of client-cancelled calls: tokens left and when they were counted.
    resets: Mutex<Option<(f64, Instant)>>,
    /// Cancelled when the connection overspent that budget.
    calm: CancellationToken,
}

impl Shared {
    /// One call the client cancelled before its answer; over the budget, `calm` fires.
    fn cancelled_by_client(&self) {
        self.cancelled_at(Instant::now());
    }

    fn cancelled_at(&self, now: Instant) {
        let mut resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, at) = resets.unwrap_or((RESET_BURST, now));
        let refill = now.saturating_duration_since(at).as_secs_f64() * RESET_REFILL_PER_SEC;
        let tokens = (tokens + refill).min(RESET_BURST) - 1.0;
        *resets = Some((tokens, now));
        if tokens < 0.0 {
            self.calm.cancel();
        }
    }
}

/// A connection's place in the registry; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl Registry {
    /// A registry admitting at most `cap` connections (at least one).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Registry {
            cap: cap.max(1),
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            base: Instant::now(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic (each change is one map operation).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection: at once below the cap; at the cap, after shedding the
    /// oldest idle connection (one at a time) or, when all are busy, after one closes.
    /// `None` once `shutdown` fires.
    pub(crate) async fn register(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<Slot> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_register() {
                return Some(slot);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = freed => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// A place at once, if one is free (at the cap, the oldest idle connection is told to
    /// go, and `None` returned).
    pub(crate) fn try_register(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state();
        if state.conns.len() < self.cap {
            let id = state.next_id;
            state.next_id += 1;
            let shared = Arc::new(Shared::default());
            shared.idle_since.store(self.millis(), Ordering::Release);
            state.conns.insert(id, shared.clone());
            return Some(Slot {
                id,
                shared,
                registry: self.clone(),
            });
        }
        // One shed at a time: the one already going frees the place this call waits for.
        if state.conns.values().any(|c| c.shed.is_cancelled()) {
            return None;
        }
        let oldest_idle = state
            .conns
            .values()
            .find(|c| c.busy.load(Ordering::Acquire) == 0)
            .cloned();
        if let Some(c) = oldest_idle {
            c.shed.cancel();
            state.shed += 1;
        }
        None
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connections shed so far.
    #[cfg(test)]
    fn shed_count(&self) -> u64 {
        self.state().shed
    }
}

impl Slot {
    /// Fires when the registry sheds this connection to make room: close it (gracefully
    /// where the protocol has a way) and free the slot.
    pub(crate) fn shed(&self) -> &CancellationToken {
        &self.shared.shed
    }

    /// Marks one call in flight until the guard drops.
    pub(crate) fn busy(&self) -> Busy {
        self.shared.busy.fetch_add(1, Ordering::AcqRel);
        self.shared.served.store(true, Ordering::Release);
        Busy {
            shared: self.shared.clone(),
            registry: self.registry.clone(),
            done: false,
        }
    }

    /// Fires when the client cancelled more calls than its budget allows
    /// ([`RESET_BURST`], [`RESET_REFILL_PER_SEC`]): tell it to go away.
    pub(crate) fn calm(&self) -> &CancellationToken {
        &self.shared.calm
    }

    /// Whether a call arrived on this connection yet.
    pub(crate) fn served(&self) -> bool {
        self.shared.served.load(Ordering::Acquire)
    }

    /// How long the connection has had no call in flight; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.shared.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.shared.idle_since.load(Ordering::Acquire);
        Some(Duration::from_millis(
            self.registry.millis().saturating_sub(since),
        ))
    }

    /// Sets the number of calls in flight (for a loop that counts them itself).
    pub(crate) fn set_busy(&self, calls: usize) {
        self.shared.busy.store(calls, Ordering::Release);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.state().conns.remove(&self.id);
        self.registry.freed.notify_waiters();
    }
}

/// One call in flight on a connection; see [`Slot::busy`].
#[derive(Debug)]
pub(crate) struct Busy {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    done: bool,
}

impl Busy {
    /// The call was answered (a `Busy` dropped without this was cancelled by the client).
    pub(crate) fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancelled_by_client();
        }
        let now = self.registry.millis();
        self.shared.idle_since.store(now, Ordering::Release);
        self.shared.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn below_the_cap_registers_at_once() {
        let r = Registry::new(2);
        let never = CancellationToken::new();
        let a = r.register(&never).await.unwrap();
        let b = r.register(&never).await.unwrap();
        assert!(!a.shed().is_cancelled() && !b.shed().is_cancelled());
        assert_eq!(r.shed_count(), 0);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_is_shed() {
        let r = Registry::new(3);
        let never = CancellationToken::new();
        let busy_oldest = r.register(&never).await.unwrap();
        let _call = busy_oldest.busy();
        let idle = r.register(&never).await.unwrap();
        let idle_newer = r.register(&never).await.unwrap();
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.register(&CancellationToken::new()).await.map(|s| s.id) }
        });
        tokio::time::timeout(Duration::from_secs(5), idle.shed().cancelled())
            .await
            .unwrap();
        assert!(!busy_oldest.shed().is_cancelled(), "a busy one is kept");
        assert!(
            !idle_newer.shed().is_cancelled(),
            "only the oldest idle one goes"
        );
        assert!(
            !waiting.is_finished(),
            "the new one waits for the shed one to close"
        );
        drop(idle);
        let id = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id, Some(3));
        assert_eq!(r.shed_count(), 1);
    }

    #[tokio::test]
    async fn all_busy_waits_until_one_goes_idle() {
        let r = Registry::new(1);
        let never = CancellationToken::new();
        let only = r.register(&never).await.unwrap();
        let call = only.busy();
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.register(&CancellationToken::new()).await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(!only.shed().is_cancelled());
        drop(call);
        tokio::time::timeout(Duration::from_secs(5), only.shed().cancelled())
            .await
            .unwrap();
        drop(only);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .unwrap()
                .unwrap()
        );
    }

    #[tokio::test]
    async fn cancelled_calls_beyond_the_budget_fire_calm() {
        let r = Registry::new(1);
        let slot = r.register(&CancellationToken::new()).await.unwrap();
        for _ in 0..100 {
            slot.busy().finish();
        }
        assert!(!slot.calm().is_cancelled(), "answered calls cost nothing");
        let start = Instant::now();
        for _ in 0..RESET_BURST as usize {
            slot.shared.cancelled_at(start);
        }
        assert!(!slot.calm().is_cancelled(), "a burst within the budget");
        let later = start + Duration::from_secs(1);
        for _ in 0..RESET_REFILL_PER_SEC as usize {
            slot.shared.cancelled_at(later);
        }
        assert!(!slot.calm().is_cancelled(), "refilled after a second");
        drop(slot.busy());
        assert!(slot.calm().is_cancelled(), "one more than the budget");
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait() {
        let r = Registry::new(1);
        let never = CancellationToken::new();
        let only = r.register(&never).await.unwrap();
        let _call = only.busy();
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(r.register(&stop).await.is_none());
    }
}
