//! Router One's durable state: the [`router_one_core::store::Store`] trait implemented for
//! SQLite (PostgreSQL later, mirroring the same schema and passing the same test suite), its
//! migrations, and the crash-safe batched usage path ([`UsageWriter`], promise 5).

mod convert;
mod journal;
pub mod sqlite;
pub mod writer;

pub use sqlite::SqliteStore;
pub use writer::UsageWriter;
