//! Enqueue requests as clients send them, and their validation into `NewJob`. Every rule is an
//! explicit limit with a field-level message; nothing a client sends reaches the store
//! unchecked.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use carafe_core::jobs::{Backoff, JobState, NewJob, QueueName, Unique};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::Jobs;
use super::targets::TargetPolicy;
use crate::context::FieldError;

/// Longest delay (or distance of `run_at` into the future) accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
pub const MAX_ATTEMPTS: i64 = 1000;
pub const DEFAULT_ATTEMPTS: u32 = 25;
pub const DEFAULT_PRIORITY: i16 = 5;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const MAX_UNIQUE_KEY: usize = 255;
pub const MAX_OWNER: usize = 255;
/// Most jobs in one batch enqueue.
pub const MAX_BATCH: usize = 1000;
pub const MAX_TARGET: usize = 2048;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueJob {
    /// 1–64 of `a-z 0-9 . _ -`; `carafe.*` is reserved.
    pub queue: String,
    /// A JSON object handed to the worker (default `{}`), at most `jobs.max_args_bytes`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Option<Value>,
    /// At most one live job (by default) per queue with this key; another enqueue returns it.
    pub unique_key: Option<String>,
    /// States the unique key covers (default: scheduled, available, running, retryable).
    pub unique_states: Option<Vec<String>>,
    /// Only jobs created this recently count for the unique key.
    pub unique_period_ms: Option<i64>,
    /// When to run (RFC 3339); not with `delay_ms`.
    pub run_at: Option<String>,
    /// Run after this many milliseconds (0 to one year).
    pub delay_ms: Option<i64>,
    /// 0 (first) to 9 (last); default 5.
    pub priority: Option<i64>,
    /// 1–1000; default 25.
    pub max_attempts: Option<i64>,
    /// Retry delays; default exponential from 1 s, capped at 1 h, ±20 % jitter.
    #[schema(value_type = Option<Object>)]
    pub backoff: Option<Backoff>,
    /// Hard limit of one attempt for in-process handlers and push deliveries (1 s–24 h).
    pub timeout_ms: Option<i64>,
    /// The application's user the job belongs to; that user's tokens may watch and cancel it.
    pub owner: Option<String>,
    /// Push delivery: Carafe POSTs the job to this http(s) URL, signed, instead of waiting for
    /// a pull worker (needs `push.secret`).
    pub target: Option<String>,
}

/// Collects field problems so a client learns about all of them at once.
#[derive(Default)]
struct Problems {
    prefix: String,
    list: Vec<(String, String)>,
}

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.list
            .push((format!("{}/{field}", self.prefix), message.into()));
    }
}

/// Validates one request; `prefix` is its JSON pointer in a batch (`/jobs/3`).
pub fn validate(
    mut req: EnqueueJob,
    prefix: &str,
    settings: &crate::jobs::Settings,
    push_enabled: bool,
    now: OffsetDateTime,
) -> Result<NewJob, Vec<(String, String)>> {
    let mut p = Problems {
        prefix: prefix.to_owned(),
        list: Vec::new(),
    };
    let queue = match QueueName::parse(&req.queue) {
        Ok(q) if q.is_reserved() => {
            p.add(
                "queue",
                "queues named carafe.* are reserved for Carafe itself",
            );
            None
        }
        Ok(q) => Some(q),
        Err(m) => {
            p.add("queue", m);
            None
        }
    };
    let args = req
        .args
        .take()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if !args.is_object() {
        p.add("args", "must be a JSON object");
    } else if args.to_string().len() > settings.max_args_bytes {
        p.add(
            "args",
            format!("must be at most {} bytes of JSON", settings.max_args_bytes),
        );
    }
    let scheduled_at = schedule(&req, now, &mut p);
    let priority = match req.priority {
        None => DEFAULT_PRIORITY,
        Some(n @ 0..=9) => n as i16,
        Some(_) => {
            p.add("priority", "must be between 0 (first) and 9 (last)");
            0
        }
    };
    let max_attempts = match req.max_attempts {
        None => DEFAULT_ATTEMPTS,
        Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => n as u32,
        Some(_) => {
            p.add("max_attempts", "must be between 1 and 1000");
            1
        }
    };
    if let Some(b) = &req.backoff
        && let Err(e) = b.validate()
    {
        p.add("backoff", e.to_string());
    }
    let timeout = match req.timeout_ms {
        None => settings.default_timeout.0,
        Some(ms) if ms >= 1000 && (ms as u128) <= MAX_TIMEOUT.as_millis() => {
            Duration::from_millis(ms as u64)
        }
        Some(_) => {
            p.add(
                "timeout_ms",
                "must be between 1000 (1 s) and 86400000 (24 h)",
            );
            Duration::ZERO
        }
    };
    let unique = unique(&req, &mut p);
    if let Some(owner) = &req.owner
        && (owner.is_empty()
            || owner.chars().count() > MAX_OWNER
            || owner.chars().any(char::is_control))
    {
        p.add(
            "owner",
            "must be 1 to 255 characters without control characters",
        );
    }
    if let Some(target) = &req.target {
        let url_ok = target.len() <= MAX_TARGET
            && url::Url::parse(target).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
            });
        if !url_ok {
            p.add(
                "target",
                "must be an http(s) URL of at most 2048 characters, without credentials",
            );
        } else if !push_enabled {
            p.add(
                "target",
                "push delivery is off: set push.secret (CARAFE_PUSH__SECRET) to use targets",
            );
        }
    }
    match (queue, p.list.is_empty()) {
        (Some(queue), true) => Ok(NewJob {
            queue,
            args,
            priority,
            max_attempts,
            backoff: req.backoff,
            timeout,
            scheduled_at,
            unique,
            owner: req.owner,
            target: req.target,
            created_at: now,
        }),
        _ => Err(p.list),
    }
}

fn schedule(req: &EnqueueJob, now: OffsetDateTime, p: &mut Problems) -> OffsetDateTime {
    match (&req.run_at, req.delay_ms) {
        (Some(_), Some(_)) => {
            p.add("delay_ms", "give run_at or delay_ms, not both");
            now
        }
        (None, Some(ms)) if ms < 0 => {
            p.add("delay_ms", "must not be negative");
            now
        }
        (None, Some(ms)) if ms as u128 > MAX_DELAY.as_millis() => {
            p.add("delay_ms", "must be at most one year");
            now
        }
        (None, Some(ms)) => now + Duration::from_millis(ms as u64),
        (Some(text), None) => {
            match OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
                Ok(t) if t > now + MAX_DELAY => {
                    p.add("run_at", "must be at most one year ahead");
                    now
                }
                // A time in the past means "now".
                Ok(t) => carafe_core::time::truncate_ms(t).max(now),
                Err(_) => {
                    p.add(
                        "run_at",
                        "must be an RFC 3339 time such as 2026-01-31T09:00:00Z",
                    );
                    now
                }
            }
        }
        (None, None) => now,
    }
}

fn unique(req: &EnqueueJob, p: &mut Problems) -> Option<Unique> {
    let Some(key) = &req.unique_key else {
        if req.unique_states.is_some() || req.unique_period_ms.is_some() {
            p.add(
                "unique_key",
                "unique_states and unique_period_ms need a unique_key",
            );
        }
        return None;
    };
    if key.is_empty() || key.len() > MAX_UNIQUE_KEY {
        p.add("unique_key", "must be 1 to 255 bytes");
    }
    let states = match &req.unique_states {
        None => JobState::LIVE.to_vec(),
        Some(list) if list.is_empty() => {
            p.add("unique_states", "give at least one state");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.parse::<JobState>() {
                Ok(st) => Some(st),
                Err(e) => {
                    p.add(&format!("unique_states/{i}"), e);
                    None
                }
            })
            .collect(),
    };
    let period = match req.unique_period_ms {
        None => None,
        Some(ms) if ms > 0 && ms as u128 <= MAX_DELAY.as_millis() => {
            Some(Duration::from_millis(ms as u64))
        }
        Some(_) => {
            p.add("unique_period_ms", "must be between 1 ms and one year");
            None
        }
    };
    Some(Unique {
        key: key.clone(),
        states,
        period,
    })
}

/// Targets resolved at once by one enqueue check (a batch usually repeats a few).
const LOOKUPS_AT_ONCE: usize = 16;

/// Validates clients' requests into jobs and checks their push targets: every way a client
/// enqueues (single, batch, workflow, schedule) goes through here. `items` pairs each request
/// with its JSON pointer (`""`, `/jobs/3`); `problems` holds those the caller found itself.
/// Field problems are one 422 `validation_failed`; refused targets, once the fields are valid,
/// one 422 `target_not_allowed`.
pub async fn accept(
    jobs: &Jobs,
    items: Vec<(String, EnqueueJob)>,
    mut problems: Vec<(String, String)>,
    now: OffsetDateTime,
) -> Result<Vec<NewJob>, EnqueueError> {
    let mut accepted = Vec::with_capacity(items.len());
    let mut prefixes = Vec::with_capacity(items.len());
    for (prefix, item) in items {
        match validate(item, &prefix, jobs.settings(), jobs.push_enabled(), now) {
            Ok(job) => accepted.push(job),
            Err(list) => problems.extend(list),
        }
        prefixes.push(prefix);
    }
    if !problems.is_empty() {
        return Err(EnqueueError::Invalid(fields(problems)));
    }
    check_targets(
        jobs.targets(),
        prefixes.iter().map(String::as_str).zip(&accepted),
    )
    .await?;
    Ok(accepted)
}

/// Refuses the targets the policy does not allow, naming each one's field.
async fn check_targets<'a>(
    policy: &TargetPolicy,
    jobs: impl IntoIterator<Item = (&'a str, &'a NewJob)>,
) -> Result<(), EnqueueError> {
    use futures::StreamExt;
    let with_target: Vec<(&str, &str)> = jobs
        .into_iter()
        .filter_map(|(prefix, job)| Some((prefix, job.target.as_deref()?)))
        .collect();
    let distinct: BTreeSet<String> = with_target.iter().map(|(_, t)| (*t).to_owned()).collect();
    // Owned strings: a closure over borrowed ones would not be `Send` for every lifetime.
    let refused: HashMap<String, String> = futures::stream::iter(distinct)
        .map(|target| async move {
            let verdict = policy.check(&target).await;
            (target, verdict)
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .filter_map(|(target, verdict)| async move { Some((target, verdict.err()?.to_string())) })
        .collect()
        .await;
    if refused.is_empty() {
        return Ok(());
    }
    Err(EnqueueError::TargetNotAllowed(
        with_target
            .into_iter()
            .filter_map(|(prefix, target)| {
                let message = refused.get(target)?;
                Some(FieldError::new(format!("{prefix}/target"), message.clone()))
            })
            .collect(),
    ))
}

/// Why an enqueue was refused, naming each field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// Push targets the target policy refuses (after every field was valid).
    #[error("push targets must resolve to public addresses unless the operator allows them")]
    TargetNotAllowed(Vec<FieldError>),
}

/// Collected `(field, message)` problems as field errors.
pub fn fields(list: Vec<(String, String)>) -> Vec<FieldError> {
    list.into_iter()
        .map(|(field, message)| FieldError::new(field, message))
        .collect()
}

#[cfg(test)]
mod tests;
