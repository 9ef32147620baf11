//! HTTP handlers for enqueueing and inspecting jobs and for queue administration. Applications'
//! backends (API keys with the `jobs` scope) do everything; end users (tokens with `jobs`) may
//! read, watch and cancel their own jobs, and see others' as not found.

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carafe_core::jobs::{Inserted, Job, JobFilter, JobId, JobState, QueueName};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::jobs::views::{JobView, QueueView};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams, PageBody};
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;
use crate::jobs::access::{self, Caller, QueueAction};
use crate::jobs::request::{self, EnqueueJob, MAX_BATCH};

fn location(base: &BaseUrl, id: JobId) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(&base.join(&format!("/api/v1/jobs/{id}")))
        .map_err(|e| ApiError::internal(&e))
}

/// Enqueue a job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = EnqueueJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the answer for 24 h")),
    responses((status = 201, body = JobView, headers(("Location" = String))),
              (status = 200, description = "A live job with the same unique_key exists; it is returned", body = JobView),
              (status = 422, body = Problem, description = "Invalid fields (`validation_failed`), or a push `target` that resolves to a non-public address (`target_not_allowed`)")),
    security(("bearer" = ["jobs"])))]
pub async fn enqueue(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Json(body): Json<EnqueueJob>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Jobs)?;
    let at = now();
    let new = request::accept(&state.jobs, vec![(String::new(), body)], Vec::new(), at)
        .await?
        .remove(0);
    let inserted = state.jobs.enqueue(vec![new]).await?.remove(0);
    let status = match inserted {
        Inserted::Created(_) => StatusCode::CREATED,
        Inserted::Existing(_) => StatusCode::OK,
    };
    let job = inserted.into_job();
    let loc = location(&base, job.id)?;
    Ok((
        status,
        [(header::LOCATION, loc)],
        axum::Json(JobView::new(job, at)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBatch {
    /// Up to 1,000 jobs, enqueued in one transaction (all or none).
    pub jobs: Vec<EnqueueJob>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// False when a live job with the same unique_key was returned instead.
    pub created: bool,
    pub job: JobView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    pub items: Vec<BatchItem>,
}

/// Enqueue up to 1,000 jobs in one transaction.
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = EnqueueBatch,
    responses((status = 201, body = BatchAnswer),
              (status = 422, body = Problem, description = "Invalid fields (`validation_failed`), or a push `target` that resolves to a non-public address (`target_not_allowed`); nothing is enqueued")),
    security(("bearer" = ["jobs"])))]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<EnqueueBatch>,
) -> ApiResult<(StatusCode, axum::Json<BatchAnswer>)> {
    principal.require_key(Scope::Jobs)?;
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "/jobs",
            format!("give 1 to {MAX_BATCH} jobs"),
        ));
    }
    let at = now();
    let items = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| (format!("/jobs/{i}"), job))
        .collect();
    let jobs = request::accept(&state.jobs, items, Vec::new(), at).await?;
    let inserted = state.jobs.enqueue(jobs).await?;
    let items = inserted
        .into_iter()
        .map(|i| BatchItem {
            created: matches!(i, Inserted::Created(_)),
            job: JobView::new(i.into_job(), at),
        })
        .collect();
    Ok((StatusCode::CREATED, axum::Json(BatchAnswer { items })))
}

/// A job the caller may see and do `action` on: 404 when it may not see it (others' jobs are
/// indistinguishable from missing ones), 403 `reserved_queue` when it may see it but the job
/// is Carafe's own and the action is not the caller's to take.
pub async fn visible_job(
    state: &AppState,
    principal: &Principal,
    id: JobId,
    action: QueueAction,
) -> ApiResult<Job> {
    principal.require(Scope::Jobs)?;
    let job = state.jobs.get(id).await?.ok_or_else(ApiError::not_found)?;
    if !principal.may_see(Scope::Jobs, job.owner.as_deref()) {
        return Err(ApiError::not_found());
    }
    let caller = Caller::of(principal);
    access::check(caller, &job.queue, QueueAction::Read)?;
    access::check(caller, &job.queue, action)?;
    Ok(job)
}

/// Get a job: state, attempt, progress, checkpoint, result, errors.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
) -> ApiResult<axum::Json<JobView>> {
    let job = visible_job(&state, &principal, id, QueueAction::Read).await?;
    Ok(axum::Json(JobView::new(job, now())))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    pub queue: Option<String>,
    /// An (effective) state.
    pub state: Option<String>,
    pub owner: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// List jobs, newest first. End users see only their own.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobListParams),
    responses((status = 200, body = PageBody<JobView>, headers(("Link" = String))), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem),
              (status = 400, body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<JobListParams>,
) -> ApiResult<Response> {
    principal.require(Scope::Jobs)?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .page_request()?;
    let queue = params
        .queue
        .map(|q| QueueName::parse(&q).map_err(|m| ApiError::bad_request("invalid_query", m)))
        .transpose()?;
    let job_state = params
        .state
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|m| ApiError::bad_request("invalid_query", m))
        })
        .transpose()?;
    let owner = match &principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Key(_) => params.owner,
    };
    let caller = Caller::of(&principal);
    if let Some(q) = &queue {
        access::check(caller, q, QueueAction::Read)?;
    }
    let filter = JobFilter {
        // Carafe's own jobs are listed for admins, or when asked for by queue (checked above).
        exclude_reserved: caller != Caller::Admin && queue.is_none(),
        queue,
        state: job_state,
        owner,
    };
    let at = now();
    let jobs = state.jobs.list(&filter, &page).await?;
    Ok(pagination::respond(
        jobs,
        |j| JobView::new(j, at),
        &base,
        &uri,
    ))
}

/// Cancel a job: a waiting job is cancelled at once; a running one is asked to stop (its
/// worker sees `cancel_requested`). 409 when the job already finished otherwise.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
) -> ApiResult<axum::Json<JobView>> {
    visible_job(&state, &principal, id, QueueAction::Cancel).await?;
    let job = state
        .jobs
        .cancel(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if matches!(job.state, JobState::Completed | JobState::Discarded) {
        return Err(ApiError::conflict(
            "job_finished",
            format!("the job is already {}", job.state),
        ));
    }
    Ok(axum::Json(JobView::new(job, now())))
}

/// Run a job again now: a finished job gets one more attempt; a waiting one runs at once.
/// 409 while it runs.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<JobId>,
) -> ApiResult<axum::Json<JobView>> {
    principal.require_key(Scope::Jobs)?;
    visible_job(&state, &principal, id, QueueAction::Retry).await?;
    let job = state
        .jobs
        .retry(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    match job.state {
        JobState::Running => Err(ApiError::conflict(
            "job_running",
            "the job is running; cancel it first",
        )),
        JobState::Pending => Err(ApiError::conflict(
            "job_pending",
            "the job is a workflow step waiting for the steps before it",
        )),
        _ => Ok(axum::Json(JobView::new(job, now()))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    pub items: Vec<QueueView>,
}

/// Queues with their counts by state, oldest waiting job and throughput.
#[utoipa::path(get, path = "/api/v1/queues", tag = "jobs",
    responses((status = 200, body = QueueList)), security(("bearer" = ["jobs"])))]
pub async fn queues(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<QueueList>> {
    principal.require_key(Scope::Jobs)?;
    let caller = Caller::of(&principal);
    let at = now();
    let stats = state.jobs.queue_stats(at).await?;
    Ok(axum::Json(QueueList {
        items: stats
            .into_iter()
            .filter(|s| {
                // Reserved queues are listed to those who may read them.
                QueueName::parse(&s.queue)
                    .is_ok_and(|q| access::check(caller, &q, QueueAction::Read).is_ok())
            })
            .map(|s| QueueView::new(s, at))
            .collect(),
    }))
}

/// One queue's view, after a change to its settings.
async fn queue_view(state: &AppState, queue: &QueueName) -> ApiResult<axum::Json<QueueView>> {
    let at = now();
    let stats = state.jobs.queue_stats(at).await?;
    let view = stats
        .into_iter()
        .find(|s| s.queue == queue.as_str())
        .map(|s| QueueView::new(s, at))
        .ok_or_else(|| ApiError::internal(&"queue vanished after a settings change"))?;
    Ok(axum::Json(view))
}

async fn set_paused(
    state: &AppState,
    principal: &Principal,
    name: &str,
    paused: bool,
) -> ApiResult<axum::Json<QueueView>> {
    principal.require_key(Scope::Jobs)?;
    let queue = QueueName::parse(name).map_err(|_| ApiError::not_found())?;
    access::check(Caller::of(principal), &queue, QueueAction::Pause)?;
    state.jobs.set_paused(&queue, paused).await?;
    queue_view(state, &queue).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// At most this many of the queue's jobs run at once, across all instances and workers
    /// (1–100000); null for no limit.
    pub concurrency: Option<i64>,
    /// At most this many claims per second on average (0.001–100000), in bursts of up to one
    /// second's worth; null for no limit.
    pub rate_per_second: Option<f64>,
    /// The lease (1000–86400000 ms) a claim gets, and a heartbeat renews, when it names none —
    /// for pull workers, in-process handlers and push deliveries; null for `jobs.lease`.
    pub lease_ms: Option<i64>,
}

/// Set a queue's limits and lease (replacing the previous ones).
#[utoipa::path(put, path = "/api/v1/queues/{queue}", tag = "jobs", request_body = QueueSettings,
    params(("queue" = String, Path)),
    responses((status = 200, body = QueueView), (status = 422, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn configure(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(body): Json<QueueSettings>,
) -> ApiResult<axum::Json<QueueView>> {
    principal.require_key(Scope::Jobs)?;
    let queue = QueueName::parse(&name).map_err(|m| ApiError::invalid("queue", m))?;
    access::check(Caller::of(&principal), &queue, QueueAction::Configure)?;
    let concurrency = match body.concurrency {
        None => None,
        Some(n @ 1..=100_000) => Some(n as u32),
        Some(_) => {
            return Err(ApiError::invalid(
                "/concurrency",
                "must be between 1 and 100000, or null",
            ));
        }
    };
    let rate = match body.rate_per_second {
        None => None,
        Some(r) if (0.001..=100_000.0).contains(&r) => Some(r),
        Some(_) => {
            return Err(ApiError::invalid(
                "/rate_per_second",
                "must be between 0.001 and 100000, or null",
            ));
        }
    };
    let lease = body
        .lease_ms
        .map(|ms| crate::api::jobs::workers::lease_length(ms, "/lease_ms"))
        .transpose()?;
    let limits = carafe_core::jobs::QueueLimits {
        concurrency,
        rate_per_second: rate,
        lease,
    };
    state.jobs.set_limits(&queue, limits).await?;
    queue_view(&state, &queue).await
}

/// Pause a queue: its jobs stay queued and are not claimed until it is resumed.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", tag = "jobs", params(("queue" = String, Path)),
    responses((status = 200, body = QueueView), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)), security(("bearer" = ["jobs"])))]
pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<QueueView>> {
    set_paused(&state, &principal, &name, true).await
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", tag = "jobs", params(("queue" = String, Path)),
    responses((status = 200, body = QueueView), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)), security(("bearer" = ["jobs"])))]
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<QueueView>> {
    set_paused(&state, &principal, &name, false).await
}
