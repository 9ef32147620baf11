//! The audit log: every change is attributed to an actor (`context::Actor`: an API key, an end
//! user, the CLI) and recorded, append-only, with the request that caused it; it is read back
//! filtered and exported as CSV.

pub mod csv;
pub mod query;
pub mod writer;
