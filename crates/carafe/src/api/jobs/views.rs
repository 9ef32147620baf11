//! Jobs as the API shows them. The state shown is the effective one: a scheduled or retryable
//! job whose time has come reads as `available`. Lease tokens appear only in claim answers.

use carafe_core::jobs::{
    AttemptError, ClaimedJob, Job, JobState, LeaseToken, Progress, QueueStats,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub queue: String,
    /// scheduled, available, running, retryable, completed, cancelled or discarded.
    #[schema(value_type = String)]
    pub state: JobState,
    #[schema(value_type = Object)]
    pub args: Value,
    pub priority: i16,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    #[schema(value_type = Option<Object>)]
    pub backoff: Option<carafe_core::jobs::Backoff>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub scheduled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub attempted_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finalized_at: Option<OffsetDateTime>,
    /// The worker holding (or that last held) the job.
    pub worker: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_expires_at: Option<OffsetDateTime>,
    pub unique_key: Option<String>,
    pub owner: Option<String>,
    /// Where Carafe delivers the job (push delivery).
    pub target: Option<String>,
    /// The workflow this job is a step of.
    pub workflow_id: Option<i64>,
    /// Its place in the workflow (0 first).
    pub workflow_step: Option<u32>,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Progress>,
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// One entry per failed attempt: `{at, attempt, message}`.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<AttemptError>,
    pub cancel_requested: bool,
}

impl JobView {
    pub fn new(job: Job, now: OffsetDateTime) -> Self {
        JobView {
            id: job.id.0,
            queue: job.queue.as_str().to_owned(),
            state: job.state.effective(job.scheduled_at, now),
            args: job.args,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            timeout_ms: job.timeout.as_millis() as u64,
            backoff: job.backoff,
            scheduled_at: job.scheduled_at,
            created_at: job.created_at,
            attempted_at: job.attempted_at,
            finalized_at: job.finalized_at,
            worker: job.attempted_by,
            lease_expires_at: job.lease_expires_at,
            unique_key: job.unique_key,
            owner: job.owner,
            target: job.target,
            workflow_id: job.workflow.map(|(w, _)| w.0),
            workflow_step: job.workflow.map(|(_, s)| s),
            progress: job.progress,
            checkpoint: job.checkpoint,
            result: job.result,
            errors: job.errors,
            cancel_requested: job.cancel_requested,
        }
    }
}

/// A job handed to a pull worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedView {
    pub id: i64,
    pub queue: String,
    #[schema(value_type = Object)]
    pub args: Value,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub max_attempts: u32,
    /// Present it on heartbeat, progress, complete and fail.
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: OffsetDateTime,
    /// What an earlier attempt saved, to resume from.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    pub owner: Option<String>,
}

impl From<ClaimedJob> for ClaimedView {
    fn from(c: ClaimedJob) -> Self {
        ClaimedView {
            id: c.id.0,
            queue: c.queue.as_str().to_owned(),
            args: c.args,
            attempt: c.attempt,
            max_attempts: c.max_attempts,
            lease_token: c.lease_token,
            lease_expires_at: c.lease_expires_at,
            checkpoint: c.checkpoint,
            owner: c.owner,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    /// Jobs per state (every state listed, zeros included).
    #[schema(value_type = Object)]
    pub counts: serde_json::Map<String, Value>,
    /// How long the oldest job that could run now has been waiting, in milliseconds.
    pub oldest_available_age_ms: Option<u64>,
    /// Jobs completed in the last minute.
    pub completed_last_minute: u64,
    /// At most this many of the queue's jobs run at once, across all instances.
    pub concurrency: Option<u32>,
    /// At most this many claims per second.
    pub rate_per_second: Option<f64>,
    /// The lease of a claim or heartbeat that names none, in milliseconds; null: `jobs.lease`.
    pub lease_ms: Option<u64>,
}

impl QueueView {
    pub fn new(s: QueueStats, now: OffsetDateTime) -> Self {
        let counts = JobState::ALL
            .iter()
            .map(|st| {
                let n = s
                    .counts
                    .iter()
                    .find(|(x, _)| x == st)
                    .map_or(0, |(_, n)| *n);
                (st.as_str().to_owned(), Value::from(n))
            })
            .collect();
        QueueView {
            name: s.queue,
            paused: s.paused,
            counts,
            oldest_available_age_ms: s
                .oldest_available_at
                .map(|t| (now - t).whole_milliseconds().max(0) as u64),
            completed_last_minute: s.completed_last_minute,
            concurrency: s.limits.concurrency,
            rate_per_second: s.limits.rate_per_second,
            lease_ms: s.limits.lease.map(|l| l.as_millis() as u64),
        }
    }
}
