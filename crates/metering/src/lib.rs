//! Metering: who may send a request and what it may cost. The key index answers "which key is
//! this" from memory; budgets reserve a request's worst-case cost before it leaves and settle the
//! real cost after (promise 3 is enforced in [`budget`] and only there).

pub mod budget;
pub mod index;
pub mod rate;
pub mod reservation;

pub use budget::Budget;
pub use index::{KeyIndex, KeyState};
pub use reservation::Reservation;
