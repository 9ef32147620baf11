//! HTTP handlers for schedules (API keys with the `jobs` scope).

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carafe_core::jobs::Schedule;
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams, PageBody};
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;
use crate::jobs::schedules::{ScheduleJob, ScheduleRequest};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSchedule {
    /// Five fields (`0 9 * * MON-FRI`), or six with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    pub timezone: Option<String>,
    /// The job enqueued at every tick.
    pub job: ScheduleJob,
    /// A paused schedule does not fire (default false).
    pub paused: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub job: Value,
    pub paused: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_fire_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_fire_at: Option<OffsetDateTime>,
    pub last_job_id: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Schedule> for ScheduleView {
    fn from(s: Schedule) -> Self {
        ScheduleView {
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            job: s.job,
            paused: s.paused,
            next_fire_at: s.next_fire_at,
            last_fire_at: s.last_fire_at,
            last_job_id: s.last_job_id.map(|j| j.0),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Create or replace a schedule. Its next tick is computed from now.
#[utoipa::path(put, path = "/api/v1/schedules/{name}", tag = "schedules", request_body = PutSchedule,
    params(("name" = String, Path)),
    responses((status = 201, body = ScheduleView), (status = 200, body = ScheduleView),
              (status = 422, body = Problem, description = "Invalid fields (`validation_failed`), or a push `target` that resolves to a non-public address (`target_not_allowed`)")),
    security(("bearer" = ["jobs"])))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Path(raw): Path<String>,
    Json(body): Json<PutSchedule>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Jobs)?;
    let request = ScheduleRequest {
        cron: body.cron,
        timezone: body.timezone,
        job: body.job,
        paused: body.paused.unwrap_or(false),
    };
    let (saved, created) = state.jobs.put_schedule(&raw, request, now()).await?;
    let name = &saved.name;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::from_str(&base.join(&format!("/api/v1/schedules/{name}")))
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(ScheduleView::from(saved)),
    )
        .into_response())
}

/// Get a schedule, with its next and last tick.
#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    principal.require_key(Scope::Jobs)?;
    Ok(axum::Json(state.jobs.schedule(&raw).await?.into()))
}

/// List schedules by name.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules", params(ListParams),
    responses((status = 200, body = PageBody<ScheduleView>)), security(("bearer" = ["jobs"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Jobs)?;
    let page = state.jobs.schedules(&params.page_request()?).await?;
    Ok(pagination::respond(page, ScheduleView::from, &base, &uri))
}

/// Delete a schedule (jobs it already enqueued are kept).
#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = ["jobs"])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_key(Scope::Jobs)?;
    state.jobs.delete_schedule(&raw).await?;
    Ok(StatusCode::NO_CONTENT)
}
