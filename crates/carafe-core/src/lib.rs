//! Carafe's core: the domain types every capability shares, the validated newtypes that keep bad
//! input out of the stores, and the store traits that the SQLite and PostgreSQL crates implement.
//!
//! This crate knows nothing of HTTP or of a database driver, so both store crates and the server
//! depend on it and never on each other (DESIGN.md §2).

pub mod audit;
pub mod error;
pub mod files;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod page;
pub mod store;
pub mod time;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{StoreError, StoreResult};
pub use store::Store;
