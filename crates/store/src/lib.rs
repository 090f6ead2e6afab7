//! Router One's durable state: the [`router_one_core::store::Store`] trait implemented for
//! SQLite ([`SqliteStore`], one file, the default) and PostgreSQL ([`PgStore`], for several
//! nodes sharing one database; the same schema and the same test suite), their
//! migrations, the crash-safe batched usage path ([`UsageWriter`], promise 5), and the lock
//! that keeps one gateway per data directory ([`DataDirLock`]).

mod convert;
mod journal;
mod lock;
pub mod postgres;
mod serving_claim;
pub mod sqlite;
mod usage_batch;
pub mod writer;

pub use lock::{DataDirLock, DataDirLockError, LOCK_FILE};
pub use postgres::PgStore;
pub use serving_claim::{SingleNodeClaim, claim_single_node};
pub use sqlite::SqliteStore;
pub use writer::{CommitObserver, UsageWriter};
