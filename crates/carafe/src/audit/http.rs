//! `GET /api/v1/audit` (admin): the audit log, newest first.

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use carafe_core::audit::AuditEvent;
use carafe_core::keys::Scope;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::http::auth::Principal;
use crate::http::error::{ApiResult, Problem};
use crate::http::pagination::{self, ListParams, PageBody};
use crate::http::public_url::BaseUrl;
use crate::http::query::Query;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `key:<id>`, `user:<id>`, `cli` or `system`.
    pub actor: String,
    /// e.g. `key.create`, `key.revoke`.
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            request_id: e.request_id,
            details: e.details,
        }
    }
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListParams),
    responses((status = 200, body = PageBody<AuditView>, headers(("Link" = String))),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = ["admin"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require(Scope::Admin)?;
    let page = state
        .store
        .list_audit(&Default::default(), &params.page_request()?)
        .await?;
    Ok(pagination::respond(page, AuditView::from, &base, &uri))
}
