//! `POST /api/v1/workflows` and `GET /api/v1/workflows/{id}`: chains (each step gets the
//! previous step's result in `args.previous`), groups, and groups with a callback (a chord:
//! the callback gets every member's result in `args.results`, and runs once, only if all
//! succeeded). A failed step fails the workflow and stops the rest.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carafe_core::jobs::{NewJob, Workflow, WorkflowId, WorkflowKind, WorkflowState};
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
use crate::jobs::request::{self, EnqueueJob};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 100;

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

/// Validates the steps; `waits(i)` says whether step `i` waits for others (its timing is then
/// the workflow's, so it may not set its own).
async fn steps(
    state: &AppState,
    list: Vec<(String, EnqueueJob, bool)>,
    at: OffsetDateTime,
) -> ApiResult<Vec<NewJob>> {
    let mut problems = Vec::new();
    let mut items = Vec::with_capacity(list.len());
    for (prefix, step, waits) in list {
        if step.unique_key.is_some() {
            problems.push((
                format!("{prefix}/unique_key"),
                "workflow steps cannot have a unique_key".to_owned(),
            ));
        }
        if waits && (step.run_at.is_some() || step.delay_ms.is_some()) {
            problems.push((
                format!("{prefix}/delay_ms"),
                "a step that waits for others starts when they finish".to_owned(),
            ));
        }
        items.push((prefix, step));
    }
    Ok(request::accept(&state.jobs, items, problems, at).await?)
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
    let bounded = |name: &str, n: usize| {
        if (1..=MAX_STEPS).contains(&n) {
            Ok(())
        } else {
            Err(ApiError::invalid(
                format!("/{name}"),
                format!("give 1 to {MAX_STEPS} steps"),
            ))
        }
    };
    let (kind, list) = match (body.chain, body.group, body.then) {
        (Some(chain), None, None) => {
            bounded("chain", chain.len())?;
            let list = chain
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("/chain/{i}"), s, i > 0))
                .collect();
            (WorkflowKind::Chain, list)
        }
        (None, Some(group), then) => {
            bounded("group", group.len())?;
            let mut list: Vec<_> = group
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("/group/{i}"), s, false))
                .collect();
            let kind = match then {
                Some(cb) => {
                    list.push(("/then".to_owned(), cb, true));
                    WorkflowKind::Chord
                }
                None => WorkflowKind::Group,
            };
            (kind, list)
        }
        (Some(_), Some(_), _) => {
            return Err(ApiError::invalid("/group", "give chain or group, not both"));
        }
        (Some(_), None, Some(_)) => {
            return Err(ApiError::invalid("/then", "then goes with a group"));
        }
        (None, None, _) => return Err(ApiError::invalid("/", "give a chain or a group")),
    };
    let at = now();
    let jobs = steps(&state, list, at).await?;
    let wf = state.jobs.store().create_workflow(kind, jobs, at).await?;
    for step in &wf.steps {
        state
            .jobs
            .bus()
            .publish(&crate::jobs::queue_topic(step.queue.as_str()));
    }
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
    let wf = state
        .jobs
        .store()
        .get_workflow(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(WorkflowView::new(wf, now())))
}
