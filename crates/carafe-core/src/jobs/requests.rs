//! Requests to the queue store and the rule that turns a failure into the job's next state.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::{Backoff, JobId, JobState, LeaseToken, Progress, QueueName};

/// How long a lease lasts: what the worker asked for, else the queue's `lease`, else the
/// server's default. The store resolves it, so a queue's setting applies on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseLength {
    pub asked: Option<Duration>,
    pub default: Duration,
}

impl LeaseLength {
    /// `asked` in milliseconds, for binding.
    pub fn asked_ms(&self) -> Option<i64> {
        self.asked.map(|d| d.as_millis() as i64)
    }

    pub fn default_ms(&self) -> i64 {
        self.default.as_millis() as i64
    }
}

#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub queue: &'a QueueName,
    pub worker: &'a str,
    pub max: u32,
    pub lease: LeaseLength,
    pub now: OffsetDateTime,
    /// Claim jobs with a push `target` (for the push dispatcher) instead of those without.
    pub push: bool,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub id: JobId,
    pub lease_token: LeaseToken,
    pub now: OffsetDateTime,
    /// Renew the lease to `now` + this length; `None` keeps the current expiry (a progress
    /// report).
    pub renew: Option<LeaseLength>,
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
    pub lease_token: LeaseToken,
    pub result: Value,
    /// The report came from outside Carafe (over the API): a job of a reserved (`carafe.*`)
    /// queue refuses it with `Fenced::Reserved`, checked in the same write. Only Carafe's own
    /// handlers complete those jobs.
    pub outside: bool,
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
pub struct Failure {
    pub id: JobId,
    pub lease_token: LeaseToken,
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

/// How many jobs a claim may take from a limited queue, and the rate bucket's level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    pub max: u32,
    /// Tokens in the rate bucket after refilling to `now` (before this claim takes any).
    pub tokens: f64,
    /// The time the refill counted up to (never earlier than the last one).
    pub tokens_at: OffsetDateTime,
}

/// Applies a queue's limits to a claim of `max`: the concurrency limit less the jobs already
/// running, and the tokens the bucket holds after refilling at `rate_per_second` since
/// `tokens_at` (a bucket holds one second's worth, at least one token).
pub fn allowance(
    limits: &super::QueueLimits,
    running: u64,
    tokens: f64,
    tokens_at: OffsetDateTime,
    max: u32,
    now: OffsetDateTime,
) -> Allowance {
    let mut allowed = u64::from(max);
    if let Some(limit) = limits.concurrency {
        allowed = allowed.min(u64::from(limit).saturating_sub(running));
    }
    let at = now.max(tokens_at);
    let mut level = tokens;
    if let Some(rate) = limits.rate_per_second {
        let elapsed = (at - tokens_at).as_seconds_f64().max(0.0);
        level = (tokens + elapsed * rate).min(rate.max(1.0));
        allowed = allowed.min(level.max(0.0).floor() as u64);
    }
    Allowance {
        max: allowed as u32,
        tokens: level,
        tokens_at: at,
    }
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<QueueName>,
    /// Matched against the effective state.
    pub state: Option<JobState>,
    pub owner: Option<String>,
    /// Leave out jobs of reserved (`carafe.*`) queues.
    pub exclude_reserved: bool,
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
    fn allowances_apply_concurrency_and_rate() {
        use super::super::QueueLimits;
        let t = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1000);
        let none = QueueLimits::default();
        assert_eq!(allowance(&none, 99, 0.0, t, 10, t).max, 10);
        let conc = QueueLimits {
            concurrency: Some(5),
            ..QueueLimits::default()
        };
        assert_eq!(allowance(&conc, 3, 0.0, t, 10, t).max, 2);
        assert_eq!(allowance(&conc, 7, 0.0, t, 10, t).max, 0);
        let rate = QueueLimits {
            rate_per_second: Some(10.0),
            ..QueueLimits::default()
        };
        let a = allowance(&rate, 0, 0.0, t, 100, t + Duration::from_millis(250));
        assert_eq!((a.max, a.tokens), (2, 2.5));
        let full = allowance(&rate, 0, 3.0, t, 100, t + Duration::from_secs(3600));
        assert_eq!(full.max, 10, "the bucket holds one second");
        let slow = QueueLimits {
            rate_per_second: Some(0.5),
            ..QueueLimits::default()
        };
        let a = allowance(&slow, 0, 0.0, t, 100, t + Duration::from_secs(10));
        assert_eq!(a.max, 1, "a slow rate still holds one token");
        let back = allowance(&rate, 0, 1.0, t, 100, t - Duration::from_secs(5));
        assert_eq!(
            (back.max, back.tokens_at),
            (1, t),
            "a clock that steps back refills nothing"
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
