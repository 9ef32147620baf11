//! Buckets over HTTP: create or replace a bucket's policy, read one, list them. The rules a
//! policy must follow are the files capability's (`files::buckets::validate`).

use axum::extract::State;
use carafe_core::files::{Bucket, BucketName, BucketPolicy};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use http::StatusCode;
use serde_json::json;

use super::views::BucketView;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::Json;
use crate::api::query::Path;
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::Principal;
use crate::files::buckets::validate;

/// Create or replace a bucket's policy (fields left out take their defaults).
#[utoipa::path(put, path = "/api/v1/buckets/{name}", tag = "files", request_body = Object,
    params(("name" = String, Path)),
    responses((status = 201, body = BucketView), (status = 200, body = BucketView),
              (status = 409, description = "Defined in the configuration file", body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    Path(name): Path<String>,
    Json(policy): Json<BucketPolicy>,
) -> ApiResult<(StatusCode, axum::Json<BucketView>)> {
    principal.require_key(Scope::Files)?;
    let name = BucketName::parse(&name).map_err(|e| ApiError::invalid("name", e))?;
    let files = &state.files;
    if files.settings.buckets.contains_key(name.as_str()) {
        return Err(ApiError::conflict(
            "bucket_managed_by_config",
            "this bucket is defined in the configuration file; change it there",
        ));
    }
    let errors = validate(&policy, &files.settings, files.keys.can_encrypt());
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let at = now();
    let bucket = Bucket {
        name: name.clone(),
        policy,
        created_at: at,
        updated_at: at,
    };
    let (bucket, created) = files.store().put_bucket(bucket, true).await?;
    files.forget_bucket(&name).await;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let event = actor.event(
        "bucket.put",
        Some(format!("bucket:{name}")),
        json!(bucket.policy),
    );
    state.store.append_audit(event).await?;
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
    principal.require_key(Scope::Files)?;
    let name = BucketName::parse(&name).map_err(|_| ApiError::not_found())?;
    match state.files.store().get_bucket(&name).await? {
        Some(b) => Ok(axum::Json(BucketView::from(&b))),
        None => Err(ApiError::not_found()),
    }
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
    principal.require_key(Scope::Files)?;
    let buckets = state.files.store().list_buckets().await?;
    Ok(axum::Json(BucketList {
        items: buckets.iter().map(BucketView::from).collect(),
    }))
}
