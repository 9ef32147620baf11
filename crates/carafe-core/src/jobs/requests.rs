//! Requests to the queue store and the rule that turns a failure into the job's next state.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::{Backoff, JobId, JobState, Progress, QueueName};

#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub queue: &'a QueueName,
    pub worker: &'a str,
    pub max: u32,
    /// Lease length; `None` uses each job's own timeout.
    pub lease: Option<Duration>,
    pub now: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub id: JobId,
    pub lease_token: &'a str,
    pub now: OffsetDateTime,
    /// New lease expiry; `None` keeps the current one (a progress report).
    pub extend_to: Option<OffsetDateTime>,
    pub progress: Option<Progress>,
    pub checkpoint: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatAck {
    pub cancel_requested: bool,
    pub lease_expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub id: JobId,
    pub lease_token: String,
    pub result: Value,
}

/// What a failing worker asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryRequest {
    /// Retry with the job's backoff while attempts remain.
    Default,
    /// Retry after this delay while attempts remain.
    After(Duration),
    /// Do not retry: discard now.
    Never,
}

#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub id: JobId,
    pub lease_token: &'a str,
    pub message: String,
    pub retry: RetryRequest,
    pub now: OffsetDateTime,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureOutcome {
    pub state: JobState,
    /// The next try's time, for `retryable`.
    pub retry_at: Option<OffsetDateTime>,
}

/// Decides the state after failed attempt `attempt` of `max_attempts`. A cancel request wins;
/// then an explicit "never"; then the attempt budget. `unit` drives the jitter.
pub fn after_failure(
    attempt: u32,
    max_attempts: u32,
    backoff: Option<&Backoff>,
    retry: RetryRequest,
    cancel_requested: bool,
    now: OffsetDateTime,
    unit: f64,
) -> FailureOutcome {
    let finished = |state| FailureOutcome {
        state,
        retry_at: None,
    };
    if cancel_requested {
        return finished(JobState::Cancelled);
    }
    if retry == RetryRequest::Never || attempt >= max_attempts {
        return finished(JobState::Discarded);
    }
    let delay = match retry {
        RetryRequest::After(d) => d.min(super::backoff::MAX_DELAY),
        _ => backoff.copied().unwrap_or_default().delay(attempt, unit),
    };
    FailureOutcome {
        state: JobState::Retryable,
        retry_at: Some(now + delay),
    }
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<QueueName>,
    /// Matched against the effective state.
    pub state: Option<JobState>,
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_retry_until_the_budget_is_spent() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let fixed = Backoff::Fixed { delay_ms: 500 };
        let o = after_failure(1, 3, Some(&fixed), RetryRequest::Default, false, now, 0.5);
        assert_eq!(o.state, JobState::Retryable);
        assert_eq!(o.retry_at, Some(now + Duration::from_millis(500)));
        let o = after_failure(3, 3, Some(&fixed), RetryRequest::Default, false, now, 0.5);
        assert_eq!((o.state, o.retry_at), (JobState::Discarded, None));
        let o = after_failure(1, 3, None, RetryRequest::Never, false, now, 0.5);
        assert_eq!(o.state, JobState::Discarded);
        let o = after_failure(
            1,
            3,
            None,
            RetryRequest::After(Duration::from_secs(9)),
            false,
            now,
            0.5,
        );
        assert_eq!(o.retry_at, Some(now + Duration::from_secs(9)));
        let o = after_failure(1, 3, None, RetryRequest::Default, true, now, 0.5);
        assert_eq!(
            o.state,
            JobState::Cancelled,
            "a cancel request wins over a retry"
        );
    }

    #[test]
    fn waiting_states_whose_time_came_are_available() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let later = t + Duration::from_secs(1);
        assert_eq!(JobState::Scheduled.effective(t, later), JobState::Available);
        assert_eq!(JobState::Retryable.effective(later, t), JobState::Retryable);
        assert_eq!(JobState::Running.effective(t, later), JobState::Running);
    }
}
