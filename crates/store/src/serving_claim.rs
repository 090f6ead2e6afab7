//! One gateway per PostgreSQL database, for now: a session-level advisory lock held on a
//! connection of its own for as long as the gateway runs.
//!
//! Spend caps, balances and rate limits are enforced in the serving process's memory, so two
//! gateways on one database would each let a key spend its whole cap. Until budget leases share
//! them across nodes, a second gateway is refused at start rather than allowed to overshoot.
//! The lock dies with its connection: a gateway killed with `kill -9` releases it as soon as
//! PostgreSQL notices the closed socket, so a restart is never locked out by its own corpse.

use sqlx::{Connection, PgConnection, PgPool};

use crate::convert::db_err;
use router_one_core::store::StoreResult;

/// The advisory-lock key: "R1SERVE" as ASCII, so it is recognisable in `pg_locks`.
const SERVING_LOCK: i64 = 0x0052_3153_4552_5645;

/// Held while this process serves the database; dropping it (or the process ending) lets
/// another gateway start.
#[derive(Debug)]
pub struct SingleNodeClaim {
    /// The connection holding the lock. Closed with the claim.
    _connection: PgConnection,
}

/// Takes the serving lock on a dedicated connection (detached from `pool`, so the pool can
/// never hand it to anyone else or close it); `None` if another gateway holds it.
pub async fn claim_single_node(pool: &PgPool) -> StoreResult<Option<SingleNodeClaim>> {
    let mut connection = pool.acquire().await.map_err(db_err)?.detach();
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SERVING_LOCK)
        .fetch_one(&mut connection)
        .await
        .map_err(db_err)?;
    if !taken {
        let _ = connection.close().await;
        return Ok(None);
    }
    Ok(Some(SingleNodeClaim {
        _connection: connection,
    }))
}
