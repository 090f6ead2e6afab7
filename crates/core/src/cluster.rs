//! What several gateway nodes share through the database: who is alive (node ids and epochs)
//! and **budget leases**, the money each node may spend locally without asking anyone.
//!
//! A lease is a slice of one *scope* (an account's balance, or a key's `max_spend` in one budget
//! period) granted to one node run (`node_id`, `epoch`). Its *hold* is `amount − committed`:
//! money taken from the scope and not yet recorded as spent. The database keeps, per scope,
//! `leased = Σ holds of open leases`, and grants only while `spent + leased ≤ limit` (a key) or
//! `leased ≤ balance` (an account). A node reserves locally only from what its leases hold, so
//! the cap cannot be overshot on any number of nodes (`../shared/design/scale-out.md` §4).
//!
//! Usage records carry the node run that admitted them ([`crate::usage::UsageRecord`]'s
//! `node_id`, `node_epoch`, `key_period_start_us`), and the batch that stores a record moves its
//! cost from its leases' holds to what the scope has spent, in the same transaction. A node
//! killed while holding leases freezes their holds (never lost, never re-granted) until it
//! restarts with the same node id, replays its journal and closes its old epochs' leases, or until
//! an operator forgets it.

use async_trait::async_trait;

use crate::money::Usd;
use crate::store::StoreResult;

/// One run of one gateway node: its stable id and the epoch this run was given at start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRun {
    /// The operator's name for the node (`[cluster] node_id`), stable across restarts.
    pub node_id: String,
    /// Incremented at every start of that node id: leases and records of earlier runs are
    /// told apart by it.
    pub epoch: i64,
}

/// What a lease draws on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeaseScope {
    /// An account's prepaid balance.
    Account {
        /// `acct_…`.
        account_id: String,
    },
    /// A key's `max_spend` in one budget period (`period_start_us` = 0 for a lifetime budget).
    Key {
        /// `key_…`.
        key_id: String,
        /// Start of the budget period the lease belongs to, µs (0: lifetime).
        period_start_us: i64,
    },
}

/// The answer to a grant request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Added to this node's lease on the scope (zero: refused, less than `min` was available).
    pub granted: Usd,
    /// What the scope still had available after the grant (for sizing the next ask).
    pub available: Usd,
    /// Other node runs whose open lease on the scope still holds money (not this one): while
    /// there are some, money this node could not get may come back.
    pub holders: u32,
}

/// The cluster's view from one node, refreshed by its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Whether this run is still the node's current one (false: another process started with
    /// the same node id, or an operator forgot the node; this one must stop serving).
    pub current: bool,
    /// Node ids with a recent heartbeat, sorted; this node is among them when `current`.
    pub live: Vec<String>,
}

/// A change to a key that every node must apply within a second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    /// The event's place in commit order (the poll cursor).
    pub seq: i64,
    /// What changed.
    pub kind: KeyEventKind,
    /// The key's id.
    pub id: String,
    /// Its account.
    pub account_id: String,
}

/// What a [`KeyEvent`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEventKind {
    /// An inference key was revoked, or its limits, models or expiry changed: re-read it.
    Key,
    /// A management key was revoked.
    ManagementKey,
}

/// The database side of a cluster: node registry, heartbeats and budget leases. Implemented by
/// the PostgreSQL store; a single node on SQLite has no leases (its budgets live in memory).
/// Every call is off the request hot path: a node asks for a lease only when its local slice
/// runs short, in the background or on a request's slow path.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Registers a start of `node_id` and returns its new epoch (one more than the last, 1 for a
    /// new node). A forgotten node becomes live again.
    async fn register_node(&self, node_id: &str) -> StoreResult<i64>;

    /// Records that `node` is alive, with how many usage records its journal holds that are
    /// not committed yet; returns the membership (nodes heard from within `live_within_ms`).
    async fn heartbeat(&self, node: &NodeRun, journal_pending: u64, live_within_ms: u64) -> StoreResult<Membership>;

    /// Extends `node`'s lease on `scope` by up to `ask`, at least `min` (else grants nothing).
    /// A key scope is created on first use from the key's current `max_spend` and the spend of
    /// its records in that period. Refused (zero) for a run that is not its node's current one,
    /// or a forgotten node.
    async fn grant_lease(&self, node: &NodeRun, scope: &LeaseScope, ask: Usd, min: Usd) -> StoreResult<LeaseGrant>;

    /// Gives back up to `amount` of `node`'s lease on `scope` (what the node has neither
    /// reserved nor spent). Returns what was given back (at most the lease's hold).
    async fn shrink_lease(&self, node: &NodeRun, scope: &LeaseScope, amount: Usd) -> StoreResult<Usd>;

    /// Closes every open lease of `node.node_id` from epochs before `node.epoch` (call after the
    /// journal of those runs is replayed and committed): their holds go back to their scopes.
    /// Returns the total released.
    async fn close_earlier_leases(&self, node: &NodeRun) -> StoreResult<Usd>;

    /// Closes every open lease of this run (and earlier ones) at a clean shutdown, once every
    /// record the run journaled is committed: what they still hold goes back to their scopes,
    /// so a node stopped on purpose strands nothing, and the node's row shows no journal backlog.
    /// Returns the total released.
    async fn close_own_leases(&self, node: &NodeRun) -> StoreResult<Usd>;

    /// Key events after `after`, in commit order (a cursor never skips one that commits late),
    /// at most `limit`.
    async fn key_events_since(&self, after: i64, limit: u32) -> StoreResult<Vec<KeyEvent>>;

    /// The last key event's `seq` (0: none): where a starting node's cursor begins, since the
    /// keys it loads already reflect every event before.
    async fn key_events_head(&self) -> StoreResult<i64>;

    /// Marks `node_id` forgotten (its runs can no longer be granted anything) and closes all its
    /// leases, whatever their epoch: for a node that will never come back. Returns the total
    /// released; `None` if no such node is registered.
    async fn forget_node(&self, node_id: &str) -> StoreResult<Option<Usd>>;
}
