//! The pull-worker protocol, for workers in any language: claim (long-poll) → heartbeat /
//! progress → complete or fail. Every report after the claim must carry the claim's
//! `lease_token`; a job that was rescued, cancelled or finished answers 409 `lease_lost`, so a
//! worker that lost its job can never finish it.

use std::time::Duration;

use axum::extract::State;
use carafe_core::jobs::{
    Claim, Completion, Failure, Fenced, Heartbeat, JobId, JobState, LeaseToken, Progress,
    QueueName, RetryRequest,
};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::jobs::views::{ClaimedView, JobView};
use crate::api::json::Json;
use crate::api::query::Path;
use crate::api::state::AppState;
use crate::context::Principal;
use crate::jobs::access::{self, Caller, QueueAction};

pub const MAX_CLAIM: u32 = 1000;
pub const MAX_WAIT: Duration = Duration::from_secs(60);
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WORKER_NAME: usize = 200;
pub const MAX_ERROR_CHARS: usize = 4000;

fn lease_lost() -> ApiError {
    ApiError::conflict(
        "lease_lost",
        "this lease no longer holds the job (it expired and was rescued, or the job was cancelled or finished)",
    )
}

fn fenced<T>(outcome: Fenced<T>, principal: &Principal) -> ApiResult<T> {
    match outcome {
        Fenced::Done(v) => Ok(v),
        Fenced::LeaseLost => Err(lease_lost()),
        Fenced::NotFound => Err(ApiError::not_found()),
        Fenced::Reserved(queue) => Err(reserved(principal, &queue)),
    }
}

/// 403 `reserved_queue` for a report a store refused: the job is Carafe's own.
fn reserved(principal: &Principal, queue: &QueueName) -> ApiError {
    access::refusal(Caller::of(principal), queue, QueueAction::Report).into()
}

/// A lease length a client asked for, checked against the limits.
pub fn lease_length(ms: i64, field: &str) -> ApiResult<Duration> {
    if ms >= MIN_LEASE.as_millis() as i64 && ms as u128 <= MAX_LEASE.as_millis() {
        Ok(Duration::from_millis(ms as u64))
    } else {
        Err(ApiError::invalid(
            field,
            "must be between 1000 (1 s) and 86400000 (24 h)",
        ))
    }
}

/// The lease asked for (`lease_ms`), if any; without one the queue's or the default applies.
fn asked_lease(ms: Option<i64>) -> ApiResult<Option<Duration>> {
    ms.map(|ms| lease_length(ms, "/lease_ms")).transpose()
}

/// 403 `reserved_queue` when the jobs named belong to Carafe's own queues: their leases are
/// only ever held by Carafe's handlers.
async fn may_report(state: &AppState, principal: &Principal, ids: &[JobId]) -> ApiResult<()> {
    Ok(state
        .jobs
        .check_jobs(Caller::of(principal), ids, QueueAction::Report)
        .await??)
}

fn progress_ok(p: &Option<Progress>) -> ApiResult<()> {
    match p.as_ref().map(Progress::validate) {
        Some(Err(m)) => Err(ApiError::invalid("/progress", m)),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's name, shown on the job (1–200 characters).
    pub worker: String,
    /// Most jobs to take, 1–1000 (default 1).
    pub max: Option<i64>,
    /// Wait up to this long for work, 0–60000 ms (default 0: answer at once).
    pub wait_ms: Option<i64>,
    /// Lease per job, 1 s–24 h (default: the queue's `lease_ms`, else `jobs.lease`, 60 s);
    /// extend it with heartbeats.
    pub lease_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAnswer {
    /// The claimed jobs; empty when none came within `wait_ms`.
    pub jobs: Vec<ClaimedView>,
}

/// Claim jobs (long-poll): answers as soon as a job is available, or empty after `wait_ms`.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/claim", tag = "workers", request_body = ClaimRequest,
    params(("queue" = String, Path)),
    responses((status = 200, body = ClaimAnswer), (status = 422, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    Path(queue): Path<String>,
    Json(body): Json<ClaimRequest>,
) -> ApiResult<axum::Json<ClaimAnswer>> {
    principal.require_key(Scope::Jobs)?;
    let queue = QueueName::parse(&queue).map_err(|m| ApiError::invalid("queue", m))?;
    access::check(Caller::of(&principal), &queue, QueueAction::Claim)?;
    let worker = body.worker.trim();
    if worker.is_empty()
        || worker.chars().count() > MAX_WORKER_NAME
        || worker.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "/worker",
            "must be 1 to 200 characters without control characters",
        ));
    }
    let max = match body.max.unwrap_or(1) {
        n if (1..=i64::from(MAX_CLAIM)).contains(&n) => n as u32,
        _ => return Err(ApiError::invalid("/max", "must be between 1 and 1000")),
    };
    let wait = match body.wait_ms.unwrap_or(0) {
        ms if (0..=MAX_WAIT.as_millis() as i64).contains(&ms) => Duration::from_millis(ms as u64),
        _ => return Err(ApiError::invalid("/wait_ms", "must be between 0 and 60000")),
    };
    let lease = state.jobs.lease(asked_lease(body.lease_ms)?);
    let jobs = state
        .jobs
        .claim(
            Claim {
                queue: &queue,
                worker,
                max,
                lease,
                now: now(),
                push: false,
            },
            wait,
            &state.shutdown,
        )
        .await?;
    Ok(axum::Json(ClaimAnswer {
        jobs: jobs.into_iter().map(ClaimedView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    /// Extend the lease to now + this (default: the queue's `lease_ms`, else `jobs.lease`).
    pub lease_ms: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Progress>,
    /// Saved with the job and handed to the next attempt if this one fails.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Stop working on the job and report `fail` (it will be cancelled).
    pub cancel_requested: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: OffsetDateTime,
}

/// Extend the lease; optionally report progress and save a checkpoint.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/heartbeat", tag = "workers", request_body = HeartbeatRequest,
    params(("id" = i64, Path)),
    responses((status = 200, body = HeartbeatAnswer), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
    Json(body): Json<HeartbeatRequest>,
) -> ApiResult<axum::Json<HeartbeatAnswer>> {
    principal.require_key(Scope::Jobs)?;
    let renew = state.jobs.lease(asked_lease(body.lease_ms)?);
    progress_ok(&body.progress)?;
    may_report(&state, &principal, &[id]).await?;
    report(
        &state,
        &principal,
        Heartbeat {
            id,
            lease_token: body.lease_token.clone(),
            now: now(),
            renew: Some(renew),
            progress: body.progress,
            checkpoint: body.checkpoint,
        },
    )
    .await
}

/// Sends a heartbeat (or progress report) and answers with what the worker must know.
async fn report(
    state: &AppState,
    principal: &Principal,
    hb: Heartbeat,
) -> ApiResult<axum::Json<HeartbeatAnswer>> {
    let ack = fenced(state.jobs.heartbeat(hb).await?, principal)?;
    Ok(axum::Json(HeartbeatAnswer {
        cancel_requested: ack.cancel_requested,
        lease_expires_at: ack.lease_expires_at,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    #[schema(value_type = Object)]
    pub progress: Progress,
}

/// Report progress (streamed to watchers of the job); does not extend the lease.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/progress", tag = "workers", request_body = ProgressRequest,
    params(("id" = i64, Path)),
    responses((status = 200, body = HeartbeatAnswer), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn progress(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
    Json(body): Json<ProgressRequest>,
) -> ApiResult<axum::Json<HeartbeatAnswer>> {
    principal.require_key(Scope::Jobs)?;
    progress_ok(&Some(body.progress.clone()))?;
    may_report(&state, &principal, &[id]).await?;
    report(
        &state,
        &principal,
        Heartbeat {
            id,
            lease_token: body.lease_token.clone(),
            now: now(),
            renew: None,
            progress: Some(body.progress),
            checkpoint: None,
        },
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    /// Any JSON, kept on the job and sent to its watchers.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

fn result_ok(result: &Option<Value>, max: usize, field: &str) -> ApiResult<()> {
    match result {
        Some(v) if v.to_string().len() > max => Err(ApiError::invalid(
            field,
            format!("must be at most {max} bytes of JSON"),
        )),
        _ => Ok(()),
    }
}

/// Complete a job with its result.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/complete", tag = "workers", request_body = CompleteRequest,
    params(("id" = i64, Path)),
    responses((status = 200, body = JobView), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
    Json(body): Json<CompleteRequest>,
) -> ApiResult<axum::Json<JobView>> {
    principal.require_key(Scope::Jobs)?;
    result_ok(
        &body.result,
        state.jobs.settings().max_args_bytes,
        "/result",
    )?;
    // The reserved-queue rule is checked in the write itself: one transaction, no read first.
    let item = Completion {
        id,
        lease_token: body.lease_token,
        result: body.result.unwrap_or(Value::Null),
        outside: !access::reports_reach_reserved(Caller::of(&principal)),
    };
    let done = state.jobs.complete(vec![item]).await?.into_iter().next();
    let job = fenced(done.unwrap_or(Fenced::NotFound), &principal)?;
    Ok(axum::Json(JobView::new(job, now())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteItem {
    pub id: i64,
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatch {
    /// Up to 1,000 completions, applied in one transaction.
    pub items: Vec<CompleteItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompleteOutcome {
    pub id: i64,
    /// `completed`, `lease_lost` or `not_found`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompleteBatchAnswer {
    pub results: Vec<CompleteOutcome>,
}

/// Complete many jobs at once (for throughput); each item answers for itself.
#[utoipa::path(post, path = "/api/v1/jobs/complete", tag = "workers", request_body = CompleteBatch,
    responses((status = 200, body = CompleteBatchAnswer), (status = 422, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn complete_batch(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CompleteBatch>,
) -> ApiResult<axum::Json<CompleteBatchAnswer>> {
    principal.require_key(Scope::Jobs)?;
    if body.items.is_empty() || body.items.len() > MAX_CLAIM as usize {
        return Err(ApiError::invalid("/items", "give 1 to 1000 items"));
    }
    let max = state.jobs.settings().max_args_bytes;
    for (i, item) in body.items.iter().enumerate() {
        result_ok(&item.result, max, &format!("/items/{i}/result"))?;
    }
    let items: Vec<_> = body
        .items
        .into_iter()
        .map(|i| Completion {
            id: JobId(i.id),
            lease_token: i.lease_token,
            result: i.result.unwrap_or(Value::Null),
            outside: !access::reports_reach_reserved(Caller::of(&principal)),
        })
        .collect();
    let ids: Vec<JobId> = items.iter().map(|i| i.id).collect();
    may_report(&state, &principal, &ids).await?;
    let done = state.jobs.complete(items).await?;
    let results = ids
        .iter()
        .zip(done)
        .map(|(id, outcome)| {
            Ok(CompleteOutcome {
                id: id.0,
                status: match outcome {
                    Fenced::Done(_) => "completed",
                    Fenced::LeaseLost => "lease_lost",
                    Fenced::NotFound => "not_found",
                    // Checked above for the whole batch; a job's queue never changes.
                    Fenced::Reserved(queue) => return Err(reserved(&principal, &queue)),
                },
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(axum::Json(CompleteBatchAnswer { results }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    #[schema(value_type = String)]
    pub lease_token: LeaseToken,
    /// What went wrong (kept per attempt, at most 4000 characters).
    pub error: String,
    /// False discards the job now (default true: retry while attempts remain).
    pub retry: Option<bool>,
    /// Retry after this delay instead of the job's backoff (e.g. a Retry-After).
    pub retry_in_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailAnswer {
    /// retryable, discarded or cancelled.
    #[schema(value_type = String)]
    pub state: JobState,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retry_at: Option<OffsetDateTime>,
}

/// Report a failed attempt: retried with backoff while attempts remain, else discarded.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/fail", tag = "workers", request_body = FailRequest,
    params(("id" = i64, Path)),
    responses((status = 200, body = FailAnswer), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn fail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
    Json(body): Json<FailRequest>,
) -> ApiResult<axum::Json<FailAnswer>> {
    principal.require_key(Scope::Jobs)?;
    let message: String = body.error.chars().take(MAX_ERROR_CHARS).collect();
    let retry = match (body.retry, body.retry_in_ms) {
        (Some(false), Some(_)) => {
            return Err(ApiError::invalid("/retry_in_ms", "not with retry: false"));
        }
        (Some(false), None) => RetryRequest::Never,
        (_, Some(ms)) if (0..=7 * 24 * 3600 * 1000).contains(&ms) => {
            RetryRequest::After(Duration::from_millis(ms as u64))
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "/retry_in_ms",
                "must be between 0 and 7 days",
            ));
        }
        (_, None) => RetryRequest::Default,
    };
    may_report(&state, &principal, &[id]).await?;
    let failure = Failure {
        id,
        lease_token: body.lease_token.clone(),
        message,
        retry,
        now: now(),
    };
    let outcome = fenced(state.jobs.fail(failure, None).await?, &principal)?;
    Ok(axum::Json(FailAnswer {
        state: outcome.state,
        retry_at: outcome.retry_at,
    }))
}
