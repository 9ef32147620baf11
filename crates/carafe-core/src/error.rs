//! The error every store method returns. Backends translate their driver errors into these few
//! cases, so the layers above can decide what a caller sees without knowing which database runs.

use std::error::Error as StdError;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. the same id twice). The text names the rule, not data.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached or gave up (pool timeout, connection refused, busy).
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else: a bug, a corrupt row, a failed migration.
    #[error("database error")]
    Other(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    pub fn other(e: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Other(Box::new(e))
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Other(what.into().into())
    }
}
