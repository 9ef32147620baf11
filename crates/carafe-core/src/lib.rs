//! Carafe's core: the domain types every capability shares, the validated newtypes that keep bad
//! input out of the stores, and the store traits that the SQLite and PostgreSQL crates implement.
//!
//! This crate knows nothing of HTTP or of a database driver, so both store crates and the server
//! depend on it and never on each other (DESIGN.md §2).

pub mod audit;
pub mod campaigns;
pub mod error;
pub mod files;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod page;
pub mod store;
pub mod templates;
pub mod time;

/// The store conformance suite, under the name the backends' tests have always used.
#[cfg(feature = "testing")]
pub use store::conformance as testing;

pub use error::{StoreError, StoreResult};

/// Whether `name` is 1–`max` of `a-z 0-9 . _ -`, starting with a letter or digit: the shape of
/// every name Carafe puts in URLs and storage keys (queues, buckets).
pub(crate) fn is_simple_name(name: &str, max: usize) -> bool {
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_rest = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    name.len() <= max && ok_first && ok_rest
}
pub use store::Store;
