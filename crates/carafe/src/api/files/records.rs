//! HTTP handlers for uploading, listing, reading, deleting and linking files. Applications'
//! backends (API keys with the `files` scope) do everything; end users (tokens with `files`)
//! upload files they then own, and read and delete only those.

use std::time::Duration;

use axum::extract::{OriginalUri, Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::{BucketName, FileFilter, FileId, FileRecord, FileStatus};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::client::Client;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::views::FileView;
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Origin;
use crate::context::Principal;
use crate::files::serve::disposition::DispositionKind;

pub(crate) fn origin(
    principal: &Principal,
    request_id: Option<&RequestId>,
    client: Client,
) -> Origin {
    Origin {
        actor: principal.actor(request_id.map(RequestId::as_str)),
        ip: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent,
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The bucket (default `default`).
    pub bucket: Option<String>,
    /// Wait up to this many seconds (at most 60) for processing to finish.
    pub wait: Option<u64>,
    /// The end user the file belongs to (API keys only; a token's user owns what it uploads).
    pub owner: Option<String>,
    /// The file's name, for raw uploads without `Content-Disposition`.
    pub name: Option<String>,
}

/// Upload a file: `multipart/form-data` (a `file` part, optional `metadata` JSON part) or the
/// raw bytes as the body (name from `Content-Disposition` or `?name=`).
#[utoipa::path(post, path = "/api/v1/files", tag = "files", params(UploadParams),
    request_body(content_type = "multipart/form-data", description = "The file: a multipart form, or the raw bytes with any other content type"),
    responses((status = 202, description = "Stored; processing", body = FileView, headers(("Location" = String))),
              (status = 201, description = "Stored and processed within `wait`", body = FileView),
              (status = 413, body = Problem), (status = 415, body = Problem), (status = 400, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: Option<axum::Extension<RequestId>>,
    Query(params): Query<UploadParams>,
    request: Request,
) -> ApiResult<Response> {
    principal.require(Scope::Files)?;
    let owner = match &principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Key(_) => params.owner.clone(),
    };
    if owner
        .as_ref()
        .is_some_and(|o| o.is_empty() || o.len() > 200)
    {
        return Err(ApiError::invalid("owner", "1-200 characters"));
    }
    let origin = origin(&principal, request_id.as_deref(), client);
    let file =
        crate::api::files::form::receive_upload(&state, request, &params, owner, origin).await?;
    accepted(&state, file, params.wait, &base).await
}

/// The answer to a stored upload (of any kind): once it has waited up to `wait` seconds (at
/// most 60) for processing, 201 when the file is ready, else 202; `Location` names the file.
pub(super) async fn accepted(
    state: &AppState,
    file: FileRecord,
    wait: Option<u64>,
    base: &BaseUrl,
) -> ApiResult<Response> {
    let wait = Duration::from_secs(wait.unwrap_or(0).min(60));
    let file = match file.job {
        Some(job) if !wait.is_zero() => state.files.wait_processed(file, job, wait).await?,
        _ => file,
    };
    let status = if file.status == FileStatus::Ready {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let location = HeaderValue::from_str(&base.join(&format!("/api/v1/files/{}", file.id)))
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(FileView::new(&file, base)),
    )
        .into_response())
}

/// The file, if the caller may see it; otherwise not found (never "forbidden": that would
/// say it exists).
pub(super) async fn visible(
    state: &AppState,
    principal: &Principal,
    id: FileId,
) -> ApiResult<std::sync::Arc<carafe_core::files::FileRecord>> {
    principal.require(Scope::Files)?;
    match state.files.file(id).await? {
        Some(f) if principal.may_see(Scope::Files, f.owner.as_deref()) => Ok(f),
        _ => Err(ApiError::not_found()),
    }
}

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
    // Read through the store: the cache only holds ready files, and this shows any status.
    principal.require(Scope::Files)?;
    let file = state.files.store().get_file(id).await?;
    match file {
        Some(f) if principal.may_see(Scope::Files, f.owner.as_deref()) => {
            Ok(axum::Json(FileView::new(&f, &base)))
        }
        _ => Err(ApiError::not_found()),
    }
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
    principal.require(Scope::Files)?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page_request()?;
    let mut filter = FileFilter {
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
    if let Principal::User(u) = &principal {
        filter.owner = Some(u.id.clone());
    }
    let found = state.files.store().list_files(&filter, &page).await?;
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
    principal: Principal,
    client: Client,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<FileId>,
) -> ApiResult<StatusCode> {
    principal.require(Scope::Files)?;
    let Some(file) = state.files.store().get_file(id).await? else {
        return Err(ApiError::not_found());
    };
    if !principal.may_see(Scope::Files, file.owner.as_deref()) {
        return Err(ApiError::not_found());
    }
    let audit = origin(&principal, request_id.as_deref(), client).event(
        "file.delete",
        id,
        json!({"bucket": file.bucket, "name": file.name}),
    );
    let files = &state.files;
    match files
        .store()
        .delete_file(id, now(), files.purge_job(id), audit)
        .await?
    {
        Some(_) => {
            files.forget_file(id).await;
            files.wake();
            Ok(StatusCode::NO_CONTENT)
        }
        // Held (or deleted) between the read and the write.
        None => Err(legal_hold()),
    }
}

fn legal_hold() -> ApiError {
    ApiError::conflict(
        "legal_hold",
        "the file is under legal hold; release the hold to delete it",
    )
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
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<FileId>,
    Json(body): Json<UpdateFile>,
) -> ApiResult<axum::Json<FileView>> {
    principal.require_key(Scope::Files)?;
    let audit = origin(&principal, request_id.as_deref(), client).event(
        "file.legal_hold",
        id,
        json!({"legal_hold": body.legal_hold}),
    );
    let files = &state.files;
    match files
        .store()
        .set_legal_hold(id, body.legal_hold, now(), audit)
        .await?
    {
        Some(file) => {
            files.forget_file(id).await;
            Ok(axum::Json(FileView::new(&file, &base)))
        }
        None => Err(ApiError::not_found()),
    }
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
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<FileId>,
    Json(body): Json<CreateLink>,
) -> ApiResult<(StatusCode, axum::Json<LinkView>)> {
    let file = visible(&state, &principal, id).await?;
    if file.status != FileStatus::Ready {
        return Err(ApiError::conflict(
            "file_not_ready",
            "only ready files can be linked",
        ));
    }
    let settings = &state.files.settings;
    let ttl = match body.expires_in {
        None => settings.link_default_ttl.0,
        Some(0) => return Err(ApiError::invalid("/expires_in", "must be positive")),
        Some(s) if Duration::from_secs(s) > settings.link_max_ttl.0 => {
            return Err(ApiError::invalid(
                "/expires_in",
                format!("at most {} seconds", settings.link_max_ttl.0.as_secs()),
            ));
        }
        Some(s) => Duration::from_secs(s),
    };
    let disposition = match body.disposition.as_deref() {
        None | Some("inline") => DispositionKind::Inline,
        Some("attachment") => DispositionKind::Attachment,
        Some(_) => return Err(ApiError::invalid("/disposition", "inline or attachment")),
    };
    let filename = body
        .filename
        .as_deref()
        .map(crate::files::receive::filename::sanitize);
    let expires = (now() + ttl).unix_timestamp();
    let expires_at =
        time::OffsetDateTime::from_unix_timestamp(expires).map_err(|e| ApiError::internal(&e))?;
    let query = state
        .files
        .links
        .sign(id, expires, disposition, filename.as_deref());
    let url = base.join(&format!("/api/v1/files/{id}/content?{query}"));
    let audit = origin(&principal, request_id.as_deref(), client).event(
        "file.link",
        id,
        json!({"expires_at": expires, "disposition": body.disposition}),
    );
    state.store.append_audit(audit).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(LinkView { url, expires_at }),
    ))
}
