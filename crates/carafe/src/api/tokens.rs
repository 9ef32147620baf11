//! `POST /api/v1/tokens`: an application's backend (admin key) mints a short-lived token for
//! one of its users.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use carafe_core::keys::Scope;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::tokens::MintError;
use crate::api::Layers;
use crate::api::auth::parse_scopes;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::Json;
use crate::api::state::AppState;
use crate::context::Principal;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The application's id for the user (becomes the token's `sub`).
    pub user_id: String,
    /// Lifetime in seconds; default `auth.token_default_ttl`, at most `auth.token_max_ttl`.
    pub ttl_seconds: Option<u64>,
    /// Scopes for the user (`files`, `mail`, `notify`, `jobs`; never `admin`). Default: none,
    /// which is enough for `GET /api/v1/me` only.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// Mint an end-user token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["admin"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    principal.require(Scope::Admin)?;
    let scopes = parse_scopes(&body.scopes)?;
    let ttl = body.ttl_seconds.map(Duration::from_secs);
    let minted = state
        .tokens
        .mint(&body.user_id, ttl, scopes)
        .map_err(|e| match e {
            MintError::BadUserId => ApiError::invalid("/user_id", e.to_string()),
            MintError::TtlTooShort | MintError::TtlTooLong { .. } => {
                ApiError::invalid("/ttl_seconds", e.to_string())
            }
            MintError::AdminScope => ApiError::invalid("/scopes", e.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            token: minted.token,
            token_type: "Bearer",
            expires_at: minted.expires_at,
        }),
    ))
}

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(layers.idempotent(routes!(create)))
}
