//! HTTP handler for uploading a file in one request (a form or the raw bytes), and the
//! answer every kind of upload gives once its file is recorded.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::{FileRecord, FileStatus};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::Caller;
use super::form::Form;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::views::FileView;
use crate::api::query::Query;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::files::receive::accept::UploadRequest;

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
    caller: Caller,
    base: BaseUrl,
    Query(params): Query<UploadParams>,
    request: Request,
) -> ApiResult<Response> {
    let Caller { principal, origin } = caller;
    let upload = UploadRequest {
        bucket: params.bucket,
        owner: params.owner,
        origin,
        wait: Duration::from_secs(params.wait.unwrap_or(0)),
    };
    let form = Form::new(request, params.name, &state);
    let file = state.files.upload(&principal, upload, form).await?;
    accepted(file, &base)
}

/// The answer to a stored upload (of any kind), once it has waited for processing: 201 when
/// the file is ready, else 202; `Location` names the file.
pub(super) fn accepted(file: FileRecord, base: &BaseUrl) -> ApiResult<Response> {
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
