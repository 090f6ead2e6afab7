//! Router One's durable state: the [`router_one_core::store::Store`] trait implemented for
//! SQLite (PostgreSQL later, mirroring the same schema and passing the same test suite), its
//! migrations, the crash-safe batched usage path ([`UsageWriter`], promise 5), and the lock
//! that keeps one gateway per data directory ([`DataDirLock`]).

mod convert;
mod journal;
mod lock;
pub mod sqlite;
pub mod writer;

pub use lock::{DataDirLock, DataDirLockError, LOCK_FILE};
pub use sqlite::SqliteStore;
pub use writer::UsageWriter;
