//! What the mail capability refuses, each kind with its stable code; `api/error.rs` maps them
//! to HTTP. Store failures pass through as they are.

use carafe_core::StoreError;

use crate::context::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fields of the request are invalid: each JSON pointer and why.
    #[error("the message has invalid fields")]
    Invalid(Vec<FieldError>),
    /// A template does not compile or render: where (line and column) and why.
    #[error("the template cannot be rendered")]
    Template(Vec<FieldError>),
    #[error("no such mail, message, template, campaign or outbox item")]
    NotFound,
    /// The thing is not in a state that allows this (a campaign started twice): `code` names
    /// the rule, `message` says what state it is in.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A webhook call is not signed as configured (or its provider is not configured).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// Something outside Carafe that this needs did not answer (an SNS certificate host):
    /// the caller should try again later.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}
