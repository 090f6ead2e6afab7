//! Router One's domain: money, pricing, the catalog, secrets, usage records, the error table and
//! the storage trait. No I/O happens here.

pub mod billing;
pub mod catalog;
pub mod checkout;
pub mod cluster;
pub mod error;
pub mod ids;
pub mod money;
pub mod pricing;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod webhook;

pub use catalog::{Catalog, Model, ModelKind, Route};
pub use error::{ApiError, ErrorKind};
pub use money::Usd;
pub use pricing::{PostedRates, TokenUsage};
pub use usage::{Endpoint, RecordLease, UsageRecord};
