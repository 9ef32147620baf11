//! Jobs as stored: ids, queue names, states, progress, errors, and the rows stores return
//! (queue-wide limits and figures are in `queues.rs`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::Backoff;

/// A job's id: a sequence number, so ids order jobs by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(JobId)
    }
}

/// A queue name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct QueueName(String);

impl QueueName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(name: &str) -> Result<Self, &'static str> {
        if !crate::is_simple_name(name, Self::MAX_LEN) {
            return Err(
                "queue names are 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            );
        }
        Ok(QueueName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of reserved queues.
    pub const RESERVED_PREFIX: &'static str = "carafe.";

    /// Queues named `carafe.*` belong to Carafe's own capabilities.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(Self::RESERVED_PREFIX)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A workflow step waiting for the steps before it.
    Pending,
    /// Waiting for its `scheduled_at`.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed, waiting to be tried again at `scheduled_at`.
    Retryable,
    Completed,
    Cancelled,
    /// Failed for the last time (or aborted).
    Discarded,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];
    /// States in which a job may still run: the default scope of a unique key.
    pub const LIVE: [JobState; 5] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Discarded
        )
    }

    /// Waiting states whose time has come are, for everyone looking, available.
    pub fn effective(self, scheduled_at: OffsetDateTime, now: OffsetDateTime) -> JobState {
        match self {
            JobState::Scheduled | JobState::Retryable if scheduled_at <= now => JobState::Available,
            s => s,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job state `{}`",
                    s.chars().take(32).collect::<String>()
                )
            })
    }
}

/// How far a running job has come, as its worker reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub current: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Progress {
    pub const MAX_TEXT: usize = 500;

    pub fn validate(&self) -> Result<(), &'static str> {
        if self.total.is_some_and(|t| self.current > t) {
            return Err("current must not exceed total");
        }
        let long = |s: &Option<String>| {
            s.as_ref()
                .is_some_and(|s| s.chars().count() > Self::MAX_TEXT)
        };
        if long(&self.stage) || long(&self.message) {
            return Err("stage and message are at most 500 characters");
        }
        Ok(())
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub attempt: u32,
    pub message: String,
}

/// Uniqueness of an enqueue: at most one job with this key in this queue among jobs in
/// `states`, created within `period` (any age when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unique {
    pub key: String,
    pub states: Vec<JobState>,
    pub period: Option<Duration>,
}

/// What the store needs to insert a job (validated by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub queue: QueueName,
    pub args: Value,
    pub priority: i16,
    pub max_attempts: u32,
    pub backoff: Option<Backoff>,
    /// The hard limit of one attempt, for in-process handlers and push deliveries.
    pub timeout: Duration,
    pub scheduled_at: OffsetDateTime,
    pub unique: Option<Unique>,
    /// The application's user this job belongs to; that user's tokens may watch it.
    pub owner: Option<String>,
    /// Where Carafe delivers the job (push delivery); `None` for pull workers and handlers.
    pub target: Option<String>,
    pub created_at: OffsetDateTime,
}

impl NewJob {
    /// The state a new job starts in: available now, or scheduled for later.
    pub fn initial_state(&self) -> JobState {
        if self.scheduled_at <= self.created_at {
            JobState::Available
        } else {
            JobState::Scheduled
        }
    }

    /// The job this becomes once stored under `id` (what a store would read back).
    pub fn into_job(self, id: JobId) -> Job {
        Job {
            id,
            state: self.initial_state(),
            queue: self.queue,
            args: self.args,
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout: self.timeout,
            scheduled_at: self.scheduled_at,
            created_at: self.created_at,
            attempted_at: None,
            finalized_at: None,
            attempted_by: None,
            lease_expires_at: None,
            unique_key: self.unique.map(|u| u.key),
            owner: self.owner,
            target: self.target,
            workflow: None,
            progress: None,
            checkpoint: None,
            result: None,
            errors: Vec::new(),
            cancel_requested: false,
        }
    }
}

/// A job as everyone but its worker sees it (no lease token).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub queue: QueueName,
    pub state: JobState,
    pub args: Value,
    pub priority: i16,
    pub attempt: u32,
    pub max_attempts: u32,
    pub backoff: Option<Backoff>,
    pub timeout: Duration,
    pub scheduled_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub attempted_at: Option<OffsetDateTime>,
    pub finalized_at: Option<OffsetDateTime>,
    pub attempted_by: Option<String>,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub unique_key: Option<String>,
    pub owner: Option<String>,
    pub target: Option<String>,
    /// The workflow this job is a step of, and its place in it.
    pub workflow: Option<(super::WorkflowId, u32)>,
    pub progress: Option<Progress>,
    pub checkpoint: Option<Value>,
    pub result: Option<Value>,
    pub errors: Vec<AttemptError>,
    pub cancel_requested: bool,
}

/// The token of one claim: every report on the job (heartbeat, progress, complete, fail) must
/// present it, so a worker whose lease was lost can never finish the job. Opaque text — 32
/// lowercase hex digits when a store makes one; a token a client sends is taken as it comes and
/// simply fails to match when it is not the current one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(String);

impl LeaseToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for LeaseToken {
    fn from(text: String) -> Self {
        LeaseToken(text)
    }
}

impl From<&str> for LeaseToken {
    fn from(text: &str) -> Self {
        LeaseToken(text.to_owned())
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job handed to a worker, with the lease that fences its reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: JobId,
    pub queue: QueueName,
    pub args: Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_token: LeaseToken,
    pub lease_expires_at: OffsetDateTime,
    /// The lease's length, for renewing it at the same pace.
    pub lease: Duration,
    pub checkpoint: Option<Value>,
    pub timeout: Duration,
    pub owner: Option<String>,
    pub target: Option<String>,
    /// When the job became claimable, for the enqueue-to-claim latency.
    pub scheduled_at: OffsetDateTime,
}

/// A change to a job, numbered per job so a watcher can resume exactly after the last it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job_id: JobId,
    pub seq: i64,
    pub at: OffsetDateTime,
    /// `state` or `progress`.
    pub kind: String,
    pub data: Value,
}

/// The result of an insert: a new job, or the live job a unique key matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    Created(Job),
    Existing(Job),
}

impl Inserted {
    pub fn job(&self) -> &Job {
        match self {
            Inserted::Created(j) | Inserted::Existing(j) => j,
        }
    }

    pub fn into_job(self) -> Job {
        match self {
            Inserted::Created(j) | Inserted::Existing(j) => j,
        }
    }
}

/// The answer to a fenced request (heartbeat, progress, complete, fail).
#[derive(Debug, Clone, PartialEq)]
pub enum Fenced<T> {
    Done(T),
    /// The job exists but is not running under this token (rescued, cancelled, finished).
    LeaseLost,
    NotFound,
    /// The job belongs to this reserved (`carafe.*`) queue and the report came from outside
    /// Carafe: refused, and nothing was written.
    Reserved(QueueName),
}

impl<T> Fenced<T> {
    pub fn is_done(&self) -> bool {
        matches!(self, Fenced::Done(_))
    }

    /// The same answer with the value of `Done` mapped by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fenced<U> {
        match self {
            Fenced::Done(v) => Fenced::Done(f(v)),
            Fenced::LeaseLost => Fenced::LeaseLost,
            Fenced::NotFound => Fenced::NotFound,
            Fenced::Reserved(q) => Fenced::Reserved(q),
        }
    }
}

/// A recurring job: a cron expression in a time zone and the job to enqueue at each tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    /// An IANA time zone name such as `Asia/Seoul`.
    pub timezone: String,
    /// The enqueue request (as JSON) made at every tick.
    pub job: Value,
    pub paused: bool,
    /// The next tick, in UTC.
    pub next_fire_at: OffsetDateTime,
    pub last_fire_at: Option<OffsetDateTime>,
    pub last_job_id: Option<JobId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}
