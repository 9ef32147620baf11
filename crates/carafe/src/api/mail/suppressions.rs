//! HTTP handlers for suppressions (`mail` scope): addresses mail is not sent to — add (with a
//! reason), read, list, remove.

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use carafe_core::keys::Scope;
use carafe_core::mail::Suppression;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    /// The address, lowercased.
    pub address: String,
    /// bounce, complaint, unsubscribe or manual.
    pub reason: String,
    /// Who or what added it.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<Suppression> for SuppressionView {
    fn from(s: Suppression) -> Self {
        SuppressionView {
            address: s.address,
            reason: s.reason,
            source: s.source,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Suppress {
    pub address: String,
    /// bounce, complaint, unsubscribe or manual (the default).
    pub reason: Option<String>,
}

/// Suppress an address: 201 when added, 200 with the first entry when it already was.
#[utoipa::path(post, path = "/api/v1/suppressions", tag = "mail", request_body = Suppress,
    responses((status = 201, body = SuppressionView, headers(("Location" = String))),
              (status = 200, body = SuppressionView), (status = 422, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn add(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    base: BaseUrl,
    Json(body): Json<Suppress>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let (entry, added) = state
        .mail
        .suppress(&body.address, body.reason.as_deref(), &actor)
        .await?;
    let location = base.join(&format!("/api/v1/suppressions/{}", entry.address));
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    crate::api::json::located(status, &location, SuppressionView::from(entry))
}

/// Suppressed addresses, in address order.
#[utoipa::path(get, path = "/api/v1/suppressions", tag = "mail", params(ListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<SuppressionView>))),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = state.mail.suppressions(&params.page_request()?).await?;
    Ok(pagination::respond(
        page,
        SuppressionView::from,
        &base,
        &uri,
    ))
}

/// One address's suppression.
#[utoipa::path(get, path = "/api/v1/suppressions/{address}", tag = "mail",
    params(("address" = String, Path)),
    responses((status = 200, body = SuppressionView), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(address): Path<String>,
) -> ApiResult<axum::Json<SuppressionView>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(state.mail.suppression(&address).await?.into()))
}

/// Let mail reach an address again.
#[utoipa::path(delete, path = "/api/v1/suppressions/{address}", tag = "mail",
    params(("address" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(address): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_key(Scope::Mail)?;
    state.mail.unsuppress(&address).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add, list))
        .routes(routes!(get, delete))
}
