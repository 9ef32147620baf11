//! `GET /api/v1/me`: who the caller is — the API key (id, name, scopes) or the end user (id,
//! scopes, token expiry). The simplest way for a client to check its credentials.

use axum::Json;
use carafe_core::keys::Scope;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::context::Principal;

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Me {
    /// The caller is a server API key.
    ApiKey {
        id: String,
        name: String,
        #[schema(value_type = Vec<String>)]
        scopes: Vec<Scope>,
    },
    /// The caller is an end user holding a token.
    User {
        id: String,
        #[schema(value_type = Vec<String>)]
        scopes: Vec<Scope>,
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        expires_at: OffsetDateTime,
    },
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn me(principal: Principal) -> Json<Me> {
    Json(match principal {
        Principal::Key(k) => Me::ApiKey {
            id: k.id.to_string(),
            name: k.name.as_str().to_owned(),
            scopes: k.scopes.to_vec(),
        },
        Principal::User(u) => Me::User {
            id: u.id,
            scopes: u.scopes.to_vec(),
            expires_at: u.expires_at,
        },
    })
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}
