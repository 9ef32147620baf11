//! HTTP handlers for reading, listing, changing, deleting and linking files. Applications'
//! backends (API keys with the `files` scope) do everything; end users (tokens with `files`)
//! read, delete and link only the files they own. The files capability decides who may.

use axum::extract::{OriginalUri, State};
use axum::response::Response;
use carafe_core::files::{BucketName, FileFilter, FileId, FileStatus};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::views::FileView;
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::files::serve::links::LinkRequest;

/// A file's record: status, type, hash, scan result, thumbnails.
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = String, Path)),
    responses((status = 200, body = FileView), (status = 404, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Path(id): Path<FileId>,
) -> ApiResult<axum::Json<FileView>> {
    let file = state.files.get_visible(&principal, id).await?;
    Ok(axum::Json(FileView::new(&file, &base)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileListParams {
    pub bucket: Option<String>,
    pub owner: Option<String>,
    /// processing, ready, quarantined, rejected or failed.
    pub status: Option<String>,
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Files, newest first. End users see only their own.
#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(FileListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<FileView>))),
    security(("bearer" = ["files"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<FileListParams>,
) -> ApiResult<Response> {
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page_request()?;
    let filter = FileFilter {
        bucket: match &params.bucket {
            Some(b) => Some(BucketName::parse(b).map_err(|e| ApiError::invalid("bucket", e))?),
            None => None,
        },
        owner: params.owner.clone(),
        status: match &params.status {
            Some(s) => Some(FileStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "processing, ready, quarantined, rejected or failed",
                )
            })?),
            None => None,
        },
    };
    let found = state.files.list(&principal, filter, &page).await?;
    Ok(pagination::respond(
        found,
        |f| FileView::new(&f, &base),
        &base,
        &uri,
    ))
}

/// Delete a file: hidden at once, its bytes purged by a job.
#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem),
              (status = 409, description = "Under legal hold", body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<FileId>,
) -> ApiResult<StatusCode> {
    let Caller { principal, origin } = caller;
    state.files.delete(&principal, id, origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    /// Under legal hold, a file is never deleted: not through the API, not by retention.
    pub legal_hold: bool,
}

/// Change a file: set or release its legal hold.
#[utoipa::path(patch, path = "/api/v1/files/{id}", tag = "files", request_body = UpdateFile,
    params(("id" = String, Path)),
    responses((status = 200, body = FileView), (status = 404, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<FileId>,
    Json(body): Json<UpdateFile>,
) -> ApiResult<axum::Json<FileView>> {
    let Caller { principal, origin } = caller;
    let file = state
        .files
        .set_legal_hold(&principal, id, body.legal_hold, origin)
        .await?;
    Ok(axum::Json(FileView::new(&file, &base)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// Seconds until the link stops working (default 1 hour; at most `files.link_max_ttl`).
    pub expires_in: Option<u64>,
    /// `inline` (default, for types browsers may show) or `attachment`.
    pub disposition: Option<String>,
    /// A name to download under instead of the file's own. It appears in the URL.
    pub filename: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
}

/// Create an expiring signed link to a ready file's content.
#[utoipa::path(post, path = "/api/v1/files/{id}/links", tag = "files", request_body = CreateLink,
    params(("id" = String, Path)),
    responses((status = 201, body = LinkView), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<FileId>,
    Json(body): Json<CreateLink>,
) -> ApiResult<(StatusCode, axum::Json<LinkView>)> {
    let request = LinkRequest {
        expires_in: body.expires_in,
        disposition: body.disposition,
        filename: body.filename,
    };
    let Caller { principal, origin } = caller;
    let link = state
        .files
        .create_link(&principal, id, request, origin, &base)
        .await?;
    let view = LinkView {
        url: link.url,
        expires_at: link.expires_at,
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}
