//! HTTP handlers for API keys (admin scope): create (the key text is in this answer only),
//! list, get and revoke.

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use carafe_core::keys::{ApiKey, KeyId, KeyName, Scope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::Layers;
use crate::api::auth::parse_scopes;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams, PageBody};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1–100 characters, for people: "billing service", "ci deploy".
    pub name: String,
    /// Any of `admin`, `files`, `mail`, `notify`, `jobs` (`admin` implies all).
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The API key itself. It is shown only in this answer; store it now.
    pub secret: String,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        KeyView {
            id: k.id.to_string(),
            name: k.name.as_str().to_owned(),
            prefix: k.prefix,
            scopes: k.scopes.to_vec(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Create an API key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the answer for 24 h")),
    responses((status = 201, body = CreatedKey, headers(("Location" = String))),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = ["admin"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    base: BaseUrl,
    Json(body): Json<CreateKey>,
) -> ApiResult<Response> {
    principal.require(Scope::Admin)?;
    let name = KeyName::parse(&body.name).map_err(|m| ApiError::invalid("/name", m))?;
    let scopes = parse_scopes(&body.scopes)?;
    if scopes.is_empty() {
        return Err(ApiError::invalid("/scopes", "give at least one scope"));
    }
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let issued = state.keys.create(name, scopes, &actor).await?;
    let location = base.join(&format!("/api/v1/keys/{}", issued.key.id));
    let body = CreatedKey {
        key: issued.key.into(),
        secret: issued.secret,
    };
    crate::api::json::located(StatusCode::CREATED, &location, body)
}

/// List API keys, oldest first (revoked ones included).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(ListParams),
    responses((status = 200, body = PageBody<KeyView>, headers(("Link" = String))),
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
    let page = state.keys.list(&params.page_request()?).await?;
    Ok(pagination::respond(page, KeyView::from, &base, &uri))
}

/// Get one API key.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = Problem)),
    security(("bearer" = ["admin"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<KeyId>,
) -> ApiResult<axum::Json<KeyView>> {
    principal.require(Scope::Admin)?;
    let key = state.keys.get(id).await?.ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(key.into()))
}

/// Revoke an API key. It stops working at once on this instance and within
/// `auth.key_cache_ttl` on others. Revoking a revoked key is a no-op.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = ["admin"])))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<KeyId>,
) -> ApiResult<StatusCode> {
    principal.require(Scope::Admin)?;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    state
        .keys
        .revoke(id, &actor)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(layers.idempotent(routes!(create)))
        .routes(routes!(list))
        .routes(routes!(get, revoke))
}
