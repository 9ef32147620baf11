//! Operational endpoints: liveness, readiness (the database answers), Prometheus metrics and
//! the OpenAPI document. Probes need no credentials; `/metrics` needs an admin key unless
//! `metrics.public` is set.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use carafe_core::keys::Scope;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use crate::api::state::AppState;
use crate::context::Principal;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers within two seconds.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = super::error::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => Err(not_ready(&e)),
        Err(_) => Err(not_ready(&"database ping timed out")),
    }
}

fn not_ready(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %cause, "not ready");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        .detail("the database is not reachable")
}

/// Prometheus metrics (text format). Needs an admin key unless `metrics.public` is set.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 401, body = super::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, mut parts: Parts) -> ApiResult<Response> {
    if !state.config.metrics.public {
        Principal::from_request_parts(&mut parts, &state)
            .await?
            .require(Scope::Admin)?;
    }
    let text = state
        .observer
        .render(&state.jobs, state.store.as_ref())
        .await;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

/// The OpenAPI document as served, rendered once when the router is built.
#[derive(Debug, Clone)]
pub struct OpenApiJson(Arc<str>);

impl OpenApiJson {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        OpenApiJson(
            doc.to_json()
                .expect("the OpenAPI document serializes")
                .into(),
        )
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}
