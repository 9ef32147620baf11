//! Buckets over HTTP: create or replace a bucket's policy, read one, list them. Who may, and
//! the rules a policy must follow, are the files capability's (`files::buckets`).

use axum::extract::State;
use carafe_core::files::BucketPolicy;
use http::StatusCode;

use super::caller::Caller;
use super::views::BucketView;
use crate::api::error::{ApiResult, Problem};
use crate::api::json::Json;
use crate::api::query::Path;
use crate::api::state::AppState;
use crate::context::Principal;

/// Create or replace a bucket's policy (fields left out take their defaults).
#[utoipa::path(put, path = "/api/v1/buckets/{name}", tag = "files", request_body = Object,
    params(("name" = String, Path)),
    responses((status = 201, body = BucketView), (status = 200, body = BucketView),
              (status = 409, description = "Defined in the configuration file", body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(policy): Json<BucketPolicy>,
) -> ApiResult<(StatusCode, axum::Json<BucketView>)> {
    let Caller { principal, origin } = caller;
    let (bucket, created) = state
        .files
        .put_bucket(&principal, &name, policy, origin.actor)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(BucketView::from(&bucket))))
}

/// A bucket's policy.
#[utoipa::path(get, path = "/api/v1/buckets/{name}", tag = "files",
    params(("name" = String, Path)),
    responses((status = 200, body = BucketView), (status = 404, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<BucketView>> {
    let bucket = state.files.get_bucket(&principal, &name).await?;
    Ok(axum::Json(BucketView::from(&bucket)))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BucketList {
    pub items: Vec<BucketView>,
}

/// Every bucket, by name.
#[utoipa::path(get, path = "/api/v1/buckets", tag = "files",
    responses((status = 200, body = BucketList)),
    security(("bearer" = ["files"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<BucketList>> {
    let buckets = state.files.list_buckets(&principal).await?;
    Ok(axum::Json(BucketList {
        items: buckets.iter().map(BucketView::from).collect(),
    }))
}
