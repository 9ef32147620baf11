//! `POST /api/v1/workflows` and `GET /api/v1/workflows/{id}`: chains, groups and chords (see
//! `jobs::workflows`). A failed step fails the workflow and stops the rest.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carafe_core::jobs::{Workflow, WorkflowId, WorkflowKind, WorkflowState};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::jobs::views::JobView;
use crate::api::json::Json;
use crate::api::query::Path;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;
use crate::jobs::request::EnqueueJob;
use crate::jobs::workflows::Shape;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkflow {
    /// Steps run one after the other; each gets the previous result as `args.previous`.
    pub chain: Option<Vec<EnqueueJob>>,
    /// Steps run side by side.
    pub group: Option<Vec<EnqueueJob>>,
    /// With `group`: runs once every member succeeded, with their results as `args.results`.
    pub then: Option<EnqueueJob>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub id: i64,
    /// chain, group or chord.
    #[schema(value_type = String)]
    pub kind: WorkflowKind,
    /// running, completed, failed or cancelled.
    #[schema(value_type = String)]
    pub state: WorkflowState,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finalized_at: Option<OffsetDateTime>,
    /// Every step, in order (a chord's callback last).
    pub steps: Vec<JobView>,
}

impl WorkflowView {
    fn new(wf: Workflow, at: OffsetDateTime) -> Self {
        WorkflowView {
            id: wf.id.0,
            kind: wf.kind,
            state: wf.state,
            created_at: wf.created_at,
            finalized_at: wf.finalized_at,
            steps: wf.steps.into_iter().map(|j| JobView::new(j, at)).collect(),
        }
    }
}

/// Start a workflow: `{chain: [...]}`, `{group: [...]}` or `{group: [...], then: {...}}`.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "jobs", request_body = CreateWorkflow,
    responses((status = 201, body = WorkflowView, headers(("Location" = String))),
              (status = 422, body = Problem, description = "Invalid steps (`validation_failed`), or a push `target` that resolves to a non-public address (`target_not_allowed`)")),
    security(("bearer" = ["jobs"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Json(body): Json<CreateWorkflow>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Jobs)?;
    let shape = Shape::new(body.chain, body.group, body.then)?;
    let at = now();
    let wf = state.jobs.start_workflow(shape, at).await?;
    let location = HeaderValue::from_str(&base.join(&format!("/api/v1/workflows/{}", wf.id)))
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(WorkflowView::new(wf, at)),
    )
        .into_response())
}

/// A workflow with every step.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<WorkflowId>,
) -> ApiResult<axum::Json<WorkflowView>> {
    principal.require_key(Scope::Jobs)?;
    let wf = state.jobs.workflow(id).await?;
    Ok(axum::Json(WorkflowView::new(wf, now())))
}
