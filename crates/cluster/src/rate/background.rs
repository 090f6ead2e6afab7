//! The limiter's background work, off every request's path: the generation check (detects a
//! Redis that lost its state, and a Redis back from an outage), slot lease renewal, giving idle
//! slices back, forgetting idle keys, answering recalls, and the returns at shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::functions::{RECALL_CHANNEL, parse_recall};
use super::{Command, Inner};

/// The periodic loop; ends when the limiter is dropped or shut down.
pub(super) async fn run(weak: Weak<Inner>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let Some(tick_every) = weak.upgrade().map(|inner| inner.cfg.tick) else {
        return;
    };
    let mut ticker = tokio::time::interval(tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renew = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let Some(inner) = weak.upgrade() else { return };
                let renew = last_renew.elapsed() >= inner.cfg.renew_every;
                if renew {
                    last_renew = Instant::now();
                }
                inner.tick(renew).await;
            }
            command = commands.recv() => {
                let Some(Command::Shutdown(done)) = command else { return };
                if let Some(inner) = weak.upgrade() {
                    inner.give_back(None, true).await;
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Listens for recalls of other nodes and gives back this node's unused slices of that key.
/// Reconnects after an error; ends when the limiter is gone.
pub(super) async fn listen_recalls(client: redis::Client, weak: Weak<Inner>) {
    loop {
        let Some(retry) = weak.upgrade().map(|inner| inner.cfg.tick) else {
            return;
        };
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.subscribe(RECALL_CHANNEL).await.is_ok()
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let Some(inner) = weak.upgrade() else { return };
                if let Some((from, key_id)) = parse_recall(&payload)
                    && from != inner.node
                {
                    inner.give_back(Some(key_id), true).await;
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}

impl Inner {
    async fn tick(self: &Arc<Inner>, renew: bool) {
        let was_healthy = self.healthy.load(Ordering::Relaxed);
        // The generation check doubles as the liveness probe. A changed generation re-announces
        // everything (inside refresh_gen); coming back from an outage re-registers slots.
        let known = self.known_gen();
        match self.refresh_gen(known.as_deref()).await {
            Ok(generation) => {
                if !was_healthy || renew {
                    self.renew(&generation, !was_healthy).await;
                }
            }
            Err(_) => return,
        }
        self.give_back_idle().await;
        self.forget_idle();
    }

    /// Renews the slot leases of every key holding slots (after an outage: re-announces every
    /// live window too), in one pipeline.
    async fn renew(&self, generation: &str, everything: bool) {
        let holdings = self.holdings(!everything);
        if holdings.is_empty() {
            return;
        }
        let sent = Instant::now();
        let reply = self.fns.sync(generation, &holdings, &self.counter).await;
        self.note(&reply);
        if let Ok(replies) = reply {
            self.renewed(&holdings, &replies, sent);
        }
    }

    async fn give_back_idle(&self) {
        let now = Instant::now();
        let idle: Vec<String> = self
            .keys
            .iter()
            .filter(|cell| now.saturating_duration_since(cell.lock().last_use) >= self.cfg.idle_return)
            .map(|cell| cell.key_id.clone())
            .collect();
        for key_id in idle {
            self.give_back(Some(&key_id), false).await;
        }
    }

    /// Gives back the unused slices of one key (`None`: of every key) in one pipeline. Local
    /// state gives them up first, so a failed call only leaves them counted in Redis until the
    /// window ends (under-admission, never over).
    async fn give_back(&self, key_id: Option<&str>, log: bool) {
        let now = Instant::now();
        let mut returns = Vec::new();
        let mut take = |cell: &super::KeyCell| {
            if let Some((ws, rq, tk, slots)) = cell.lock().take_unused(now) {
                returns.push((cell.key_id.clone(), ws, rq, tk, slots));
            }
        };
        match key_id {
            Some(key_id) => {
                if let Some(cell) = self.keys.get(key_id) {
                    take(cell.value());
                }
            }
            None => self.keys.iter().for_each(|cell| take(cell.value())),
        }
        if returns.is_empty() {
            return;
        }
        let Some(generation) = self.known_gen() else { return };
        let reply = self.fns.give_back(&generation, &returns, &self.counter).await;
        self.note(&reply);
        if log {
            tracing::debug!(node = %self.node, keys = returns.len(), ok = reply.is_ok(), "rate limiter: gave back unused slices");
        }
    }

    /// Forgets keys that hold nothing, with nothing in flight and no grant alive.
    fn forget_idle(&self) {
        let now = Instant::now();
        self.keys.retain(|_, cell| {
            Arc::strong_count(cell) > 1
                || now.saturating_duration_since(cell.lock().last_use) < self.cfg.idle_return
                || !cell.lock().is_idle(now)
        });
    }
}
