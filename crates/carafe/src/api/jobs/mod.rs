//! The job engine over HTTP: enqueueing and reading jobs, queues, the pull-worker protocol,
//! live events, workflows and schedules. Handlers parse, call the `jobs` capability and map
//! its answers.

pub mod enqueue;
pub mod events;
pub mod schedules;
pub mod views;
pub mod workers;
pub mod workflows;
