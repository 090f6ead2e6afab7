//! How many gateway nodes are alive and where this one stands among them, as the cluster
//! membership (built elsewhere) last saw it. The rate limiter reads it only while Redis is
//! unreachable, to admit at most this node's share of a limit ("safe mode").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared, cheaply cloned handle: the membership writes it with [`LiveNodes::set`], the limiter
/// reads it. Count and rank are stored in one atomic so a reader never sees a rank from one view
/// and a count from another.
#[derive(Debug, Clone)]
pub struct LiveNodes(Arc<AtomicU64>);

impl LiveNodes {
    /// `count` live nodes, this one at position `rank` (0-based) in a stable order that every node
    /// agrees on (e.g. live node ids sorted). A count of 0 is taken as 1; a rank past the count
    /// is wrapped.
    pub fn new(count: u32, rank: u32) -> LiveNodes {
        let nodes = LiveNodes(Arc::new(AtomicU64::new(0)));
        nodes.set(count, rank);
        nodes
    }

    /// One node alone (the default: its share is the whole limit).
    pub fn single() -> LiveNodes {
        LiveNodes::new(1, 0)
    }

    /// Records a new membership view.
    pub fn set(&self, count: u32, rank: u32) {
        let count = count.max(1);
        let packed = (u64::from(count) << 32) | u64::from(rank % count);
        self.0.store(packed, Ordering::Relaxed);
    }

    /// `(count, rank)` as last set.
    pub fn get(&self) -> (u32, u32) {
        let packed = self.0.load(Ordering::Relaxed);
        let count = u32::try_from(packed >> 32).unwrap_or(1).max(1);
        let rank = u32::try_from(packed & u64::from(u32::MAX)).unwrap_or(0) % count;
        (count, rank)
    }

    /// This node's share of `limit` for the key whose id hashes to `key_hash`:
    /// `floor(limit / count)`, plus one for `limit mod count` of the nodes. Which nodes get the
    /// extra one rotates with the key (`(rank + key_hash) mod count`), so the remainders of many
    /// keys spread over the nodes. If every node has the same view, the shares add up to
    /// `limit` exactly.
    pub fn share(&self, limit: u64, key_hash: u64) -> u64 {
        let (count, rank) = self.get();
        share(limit, u64::from(count), u64::from(rank), key_hash)
    }
}

impl Default for LiveNodes {
    fn default() -> LiveNodes {
        LiveNodes::single()
    }
}

fn share(limit: u64, count: u64, rank: u64, key_hash: u64) -> u64 {
    let count = count.max(1);
    let position = (rank % count + key_hash % count) % count;
    limit / count + u64::from(position < limit % count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_for_every_key() {
        for count in 1..=7u64 {
            for limit in [0u64, 1, 2, 5, 10, 99, 1000] {
                for key_hash in [0u64, 1, 3, 12_345, u64::MAX] {
                    let total: u64 = (0..count).map(|rank| share(limit, count, rank, key_hash)).sum();
                    assert_eq!(total, limit, "count {count} limit {limit} hash {key_hash}");
                }
            }
        }
    }

    #[test]
    fn the_handle_packs_count_and_rank() {
        let nodes = LiveNodes::new(3, 1);
        assert_eq!(nodes.get(), (3, 1));
        nodes.set(0, 5);
        assert_eq!(nodes.get(), (1, 0));
        assert_eq!(LiveNodes::default().share(10, 7), 10);
    }
}
