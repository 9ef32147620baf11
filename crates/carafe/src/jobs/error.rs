//! What the job engine refuses, each kind with its stable code; `api/error.rs` maps them to
//! HTTP. Store failures pass through as they are.

use carafe_core::StoreError;

use super::access::ReservedQueue;
use super::request::EnqueueError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid jobs, or push targets the policy refuses.
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// The queue is Carafe's own.
    #[error(transparent)]
    Reserved(#[from] ReservedQueue),
    /// One field of the request is invalid: its JSON pointer and why.
    #[error("{1}")]
    Invalid(String, String),
    #[error("no such job, workflow or schedule")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid(field.into(), message.into())
    }
}
