//! The job engine's domain: what a job is, its states, how failures turn into retries, and the
//! requests the queue store answers. The rules that need no database live here so both store
//! backends apply them identically.

mod backoff;
mod model;
mod queues;
mod rate_groups;
mod requests;
mod workflow;

pub use backoff::{Backoff, BackoffError};
pub use model::*;
pub use queues::*;
pub use rate_groups::*;
pub use requests::*;
pub use workflow::*;
