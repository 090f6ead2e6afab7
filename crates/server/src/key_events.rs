//! A cluster node's view of key changes made through any node (issue 11, item 5): revoking or
//! editing an inference key, revoking a management key. The database writes a `key_events` row
//! in the same transaction as the change (a trigger, in commit order); every node polls for new
//! rows every [`POLL`] and applies them, so a change reaches every node within a second.
//!
//! The poll is also the node's **fence**: a node that has heard from neither the database (this
//! poll) nor Redis (its rate limiter) for [`FRESH_FOR`] cannot know whether a key it serves was
//! revoked meanwhile, so it refuses requests with 503 `node_isolated` until it hears again.
//! While Redis answers and the database does not, no key can be revoked (revoking needs the
//! database), so the node keeps serving what it knows. Stated exception: a revocation
//! committed less than one poll before this node lost the database is missed until it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use router_one_core::cluster::{ClusterStore, KeyEvent, KeyEventKind};
use router_one_core::{ApiError, ErrorKind};

use crate::state::AppState;

/// How often the database is asked for new key events.
const POLL: Duration = Duration::from_millis(250);
/// Events read per query.
const PAGE: u32 = 500;
/// How long a node serves without hearing from the database or Redis.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// When this node last heard from the database, and whether Redis answers.
pub struct Fence {
    origin: Instant,
    /// Milliseconds from `origin` to the last successful poll.
    polled_ms: AtomicU64,
    redis_healthy: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence").field("polled_ms", &self.polled_ms).finish()
    }
}

impl Fence {
    /// A fence that counts as fresh now (the node just loaded its keys); `redis_healthy` says
    /// whether Redis answered the node's last call.
    pub fn new(redis_healthy: Box<dyn Fn() -> bool + Send + Sync>) -> Fence {
        Fence {
            origin: Instant::now(),
            polled_ms: AtomicU64::new(0),
            redis_healthy,
        }
    }

    fn mark_polled(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.polled_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether Redis answered the node's last call (for `GET /health`).
    pub(crate) fn redis_reachable(&self) -> bool {
        (self.redis_healthy)()
    }

    /// Refuses a request if the node is isolated (two atomic loads).
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        let polled = Duration::from_millis(self.polled_ms.load(Ordering::Relaxed));
        if self.origin.elapsed().saturating_sub(polled) <= FRESH_FOR || (self.redis_healthy)() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::NodeIsolated,
            "This gateway node cannot reach its database or Redis, so it cannot check keys; retry, \
             or send the request to another node.",
        )
        .with_retry_after(1))
    }
}

/// Applies one event to the node's in-memory state.
async fn apply(app: &AppState, event: &KeyEvent) -> router_one_core::store::StoreResult<()> {
    match event.kind {
        KeyEventKind::Key => {
            // A key this node never loaded reads its current row when first used.
            if app.keys.by_id(&event.id).is_none() {
                return Ok(());
            }
            match app.store.key(&event.account_id, &event.id).await? {
                Some(key) if key.revoked_at_us.is_none() => {
                    let now_us = router_one_core::ids::now_us();
                    app.keys.update(&event.id, &key.settings, None, now_us);
                    // A cap lowered elsewhere holds here within the poll: what this node's share
                    // holds unused goes back, so only requests already in flight can use it.
                    if let (Some(leases), Some(state)) = (&app.leases, app.keys.by_id(&event.id)) {
                        leases.give_back_key_share(&state).await;
                    }
                }
                _ => app.keys.revoke(&event.id),
            }
        }
        // Revocations are rare: every cached management key is checked against the database
        // again on its next use.
        KeyEventKind::ManagementKey => app.management_keys.clear(),
    }
    Ok(())
}

/// Polls for key events from `cursor` (the head read before the keys were loaded) until the
/// process ends.
pub fn spawn(app: Arc<AppState>, store: Arc<dyn ClusterStore>, fence: Arc<Fence>, mut cursor: i64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let polled: router_one_core::store::StoreResult<()> = async {
                loop {
                    let events = store.key_events_since(cursor, PAGE).await?;
                    for event in &events {
                        apply(&app, event).await?;
                        cursor = event.seq;
                    }
                    if events.len() < PAGE as usize {
                        return Ok(());
                    }
                }
            }
            .await;
            match polled {
                Ok(()) => fence.mark_polled(),
                Err(e) => tracing::warn!(error = %e, "key events: polling the database failed"),
            }
        }
    });
}
