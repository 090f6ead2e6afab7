//! A cluster node's wiring (`--node-id`): its run in the node registry, the leases its earlier
//! runs left, the shared rate limiter, and the heartbeat that keeps its view of the cluster.
//! Without a node id the gateway is a single node and none of this runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use router_one_cluster::{LiveNodes, RedisRateLimiter};
use router_one_core::cluster::{ClusterStore, NodeRun};
use router_one_server::Coordination;
use router_one_server::key_events::Fence;
use router_one_server::leases::LeaseBook;
use router_one_store::UsageWriter;

use crate::config::Config;
use crate::database::{Database, redacted};

/// How often a node reports to the registry, and how recent a report counts as alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
const LIVE_WITHIN_MS: u64 = 3_000;

/// What makes this gateway a cluster node.
pub(crate) struct NodeConfig {
    pub(crate) node_id: String,
    redis_url: String,
}

/// The node id and Redis URL from the flags, else the config (which the environment
/// overrides); `None` for a single node. A node id needs PostgreSQL and Redis.
pub(crate) fn config(
    config: &Config,
    node_id: Option<String>,
    redis: Option<String>,
    database_url: Option<&str>,
) -> Result<Option<NodeConfig>> {
    let Some(node_id) = node_id.or_else(|| config.cluster.node_id.clone()) else {
        return Ok(None);
    };
    let node_id = node_id.trim().to_owned();
    if node_id.is_empty()
        || node_id.len() > 64
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("the node id must be 1 to 64 letters, digits, '-' or '_' (got `{node_id}`)");
    }
    if database_url.is_none() {
        bail!("a cluster node (--node-id) keeps its budgets in PostgreSQL: give --database postgres://…");
    }
    let Some(redis_url) = redis.or_else(|| config.redis.url.clone()) else {
        bail!("a cluster node (--node-id) shares rate limits through Redis: give --redis redis://…");
    };
    let redis_url = redis_url.trim().to_owned();
    if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
        bail!(
            "the Redis URL must be redis://… or rediss://… (got `{}`)",
            redacted(&redis_url)
        );
    }
    Ok(Some(NodeConfig { node_id, redis_url }))
}

/// This run of a cluster node: registered, with its leases and limiter.
pub(crate) struct Node {
    store: Arc<dyn ClusterStore>,
    run: NodeRun,
    live: LiveNodes,
    limiter: Arc<RedisRateLimiter>,
    fence: Arc<Fence>,
    /// The last key event before this node loaded its keys: where its poll starts.
    key_events_head: i64,
}

impl Node {
    /// Registers a new run of the node (its epoch) and connects the shared rate limiter.
    pub(crate) async fn start(config: &NodeConfig, database: &Database) -> Result<Node> {
        let Some(store) = database.cluster_store() else {
            bail!("a cluster node needs a PostgreSQL database");
        };
        let epoch = store
            .register_node(&config.node_id)
            .await
            .context("registering this node")?;
        let run = NodeRun {
            node_id: config.node_id.clone(),
            epoch,
        };
        let live = LiveNodes::single();
        let epoch_u64 = u64::try_from(epoch).context("the node's epoch is negative")?;
        let limiter = RedisRateLimiter::connect(&config.redis_url, &config.node_id, epoch_u64, live.clone())
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis at {}: {e}", redacted(&config.redis_url)))?;
        tracing::info!(node_id = %run.node_id, epoch, "cluster node registered");
        let key_events_head = store.key_events_head().await.context("reading the key events head")?;
        let limiter = Arc::new(limiter);
        let redis = limiter.clone();
        Ok(Node {
            store,
            run,
            live,
            fence: Arc::new(Fence::new(Box::new(move || redis.is_healthy()))),
            limiter,
            key_events_head,
        })
    }

    /// Releases what this node's earlier runs still hold. Call once their journal is replayed
    /// and committed (the usage writer's start does that), so every record that spends that
    /// money is in before the money goes back.
    pub(crate) async fn close_earlier_runs(&self) -> Result<()> {
        let released = self
            .store
            .close_earlier_leases(&self.run)
            .await
            .context("closing the leases of this node's earlier runs")?;
        tracing::info!(%released, "leases of earlier runs closed");
        Ok(())
    }

    /// The lease book and limiter the server uses.
    pub(crate) fn coordination(&self) -> (Coordination, Arc<LeaseBook>) {
        let book = Arc::new(LeaseBook::new(self.store.clone(), self.run.clone()));
        let coordination = Coordination {
            leases: Some(book.clone()),
            limiter: self.limiter.clone(),
            fence: Some(self.fence.clone()),
        };
        (coordination, book)
    }

    /// Reports to the registry every [`HEARTBEAT`] and keeps the rate limiter's view of how
    /// many nodes share each limit. If another process took over this node id (or an operator
    /// forgot the node), this run stops: two runs of one node would spend the same leases.
    pub(crate) fn spawn_heartbeat(&self, usage: UsageWriter) {
        let (store, run, live) = (self.store.clone(), self.run.clone(), self.live.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let pending = u64::try_from(usage.pending()).unwrap_or(u64::MAX);
                match store.heartbeat(&run, pending, LIVE_WITHIN_MS).await {
                    Ok(membership) if !membership.current => {
                        tracing::error!(node_id = %run.node_id, epoch = run.epoch,
                            "another run of this node id started (or the node was forgotten); stopping");
                        usage.flush().await;
                        std::process::exit(3);
                    }
                    Ok(membership) => {
                        let count = u32::try_from(membership.live.len()).unwrap_or(u32::MAX);
                        let rank = membership.live.iter().position(|id| *id == run.node_id).unwrap_or(0);
                        live.set(count, u32::try_from(rank).unwrap_or(0));
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
                }
            }
        });
    }

    /// Applies key changes made through any node, from the head read before the keys loaded.
    pub(crate) fn spawn_key_events(&self, app: Arc<router_one_server::AppState>) {
        router_one_server::key_events::spawn(app, self.store.clone(), self.fence.clone(), self.key_events_head);
    }

    /// At a clean shutdown: gives the rate limiter's unused slices back and, if every record
    /// this run journaled is committed, its leases too (otherwise they stay held until this
    /// node id starts again and replays the journal, as after a crash).
    pub(crate) async fn stop(&self, usage: &UsageWriter) {
        self.limiter.shutdown().await;
        if usage.pending() > 0 {
            tracing::warn!(
                pending = usage.pending(),
                "stopping with uncommitted records; leases stay held until this node restarts"
            );
            return;
        }
        match self.store.close_own_leases(&self.run).await {
            Ok(released) => tracing::info!(%released, "leases given back"),
            Err(e) => {
                tracing::warn!(error = %e, "giving leases back failed; they are released when this node restarts")
            }
        }
    }
}
