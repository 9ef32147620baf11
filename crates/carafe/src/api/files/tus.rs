//! HTTP handlers for tus uploads: they read the tus headers, call the files capability
//! (`files::receive::tus`) and answer with tus headers. Who may touch an upload follows
//! files: API keys with `files` reach every upload, end users (tokens with `files`) only
//! their own.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::{Upload, UploadId};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::Caller;
use super::tus_protocol::*;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::files::receive::tus::{Chunk, Creation, TusError};

/// Offset, expiry and outcome of an upload.
fn progress(upload: &Upload, base: &BaseUrl) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, value(upload.offset));
    h.insert(UPLOAD_EXPIRES, http_date(upload.expires_at));
    if let Some(file) = upload.file {
        h.insert(CARAFE_FILE_ID, value(file));
        h.insert(
            CARAFE_FILE_URL,
            value(base.join(&format!("/api/v1/files/{file}"))),
        );
    }
    if let Some(code) = upload.error_code.as_deref().and_then(|c| c.parse().ok()) {
        h.insert(CARAFE_UPLOAD_ERROR, code);
    }
    h
}

/// What this server supports (tus discovery; no authentication).
#[utoipa::path(options, path = "/api/v1/uploads", tag = "uploads",
    responses((status = 204, description = "Supported tus version, extensions and limits",
        headers(("Tus-Version" = String), ("Tus-Extension" = String), ("Tus-Max-Size" = u64),
                ("Tus-Checksum-Algorithm" = String)))))]
pub async fn options(State(state): State<AppState>) -> Response {
    let h = [
        (TUS_VERSION, HeaderValue::from_static(VERSION)),
        (TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS)),
        (TUS_MAX_SIZE, value(state.files.settings.max_upload_bytes)),
        (
            TUS_CHECKSUM_ALGORITHM,
            HeaderValue::from_static(CHECKSUM_ALGORITHMS),
        ),
    ];
    (StatusCode::NO_CONTENT, h).into_response()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// The end user the file will belong to (API keys only; a token's user owns its uploads).
    pub owner: Option<String>,
}

/// Create an upload (tus creation): `Upload-Length`, `Upload-Metadata` (`filename`, `bucket`,
/// anything else becomes the file's metadata). A body of type
/// `application/offset+octet-stream` is the first chunk.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads", params(CreateParams),
    request_body(content_type = "application/offset+octet-stream", description = "Optional first chunk"),
    responses((status = 201, description = "Created", headers(("Location" = String), ("Upload-Offset" = u64), ("Upload-Expires" = String))),
              (status = 404, description = "No such bucket", body = Problem), (status = 413, body = Problem),
              (status = 412, body = Problem), (status = 400, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Query(params): Query<CreateParams>,
    request: Request,
) -> ApiResult<Response> {
    let headers = request.headers();
    if headers.contains_key(UPLOAD_DEFER_LENGTH) {
        return Err(ApiError::bad_request(
            "defer_length_unsupported",
            "send Upload-Length",
        ));
    }
    let length = number(headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("upload_length_required", "send Upload-Length"))?;
    let metadata = parse_metadata(headers)?;
    let (with_body, checksum) = (is_offset_stream(headers), parse_checksum(headers)?);
    let declared = number(headers, &header::CONTENT_LENGTH).ok().flatten();
    let first = with_body.then(|| Chunk {
        offset: 0,
        checksum,
        declared,
        body: request.into_body().into_data_stream(),
    });
    let Caller { principal, origin } = caller;
    let creation = Creation {
        length,
        metadata,
        owner: params.owner,
        origin,
    };
    let location = |id: UploadId| value(base.join(&format!("/api/v1/uploads/{id}")));
    let upload = state
        .files
        .create_upload(&principal, creation, first)
        .await
        .map_err(|e| match e {
            // The upload exists either way: a failed first chunk says where it is.
            TusError::FirstChunk { upload, .. } => {
                ApiError::from(e).header(header::LOCATION, location(upload))
            }
            e => e.into(),
        })?;
    let mut h = progress(&upload, &base);
    h.insert(header::LOCATION, location(upload.id));
    Ok((StatusCode::CREATED, h).into_response())
}

/// How far an upload got (tus `HEAD`), and the file it became once finished
/// (`Carafe-File-Id`) or why it was refused (`Carafe-Upload-Error`).
#[utoipa::path(head, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    responses((status = 200, headers(("Upload-Offset" = u64), ("Upload-Length" = u64), ("Upload-Metadata" = String),
                ("Upload-Expires" = String), ("Carafe-File-Id" = String), ("Carafe-Upload-Error" = String))),
              (status = 404, description = "Unknown, terminated or expired")),
    security(("bearer" = ["files"])))]
pub async fn head(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Path(id): Path<UploadId>,
) -> ApiResult<Response> {
    let upload = state.files.visible_upload(&principal, id).await?;
    let mut h = progress(&upload, &base);
    h.insert(UPLOAD_LENGTH, value(upload.length));
    if let Some(metadata) = encode_metadata(&upload.metadata) {
        h.insert(UPLOAD_METADATA, metadata);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, h).into_response())
}

/// Append a chunk at `Upload-Offset` (tus `PATCH`, body `application/offset+octet-stream`,
/// optional `Upload-Checksum: sha256 <base64>`). The last chunk completes the upload: the
/// file is checked and stored like any other upload and `Carafe-File-Id` names it.
#[utoipa::path(patch, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    request_body(content_type = "application/offset+octet-stream", description = "The chunk"),
    responses((status = 204, headers(("Upload-Offset" = u64), ("Upload-Expires" = String), ("Carafe-File-Id" = String))),
              (status = 409, description = "Offset mismatch, locked, or ended", body = Problem),
              (status = 413, body = Problem), (status = 415, body = Problem),
              (status = 460, description = "Checksum mismatch", body = Problem), (status = 404, body = Problem),
              (status = 422, description = "A stored chunk is damaged: the upload ended", body = Problem),
              (status = 503, description = "The upload's master key is not configured", body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<UploadId>,
    request: Request,
) -> ApiResult<Response> {
    let headers = request.headers();
    if !is_offset_stream(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        )
        .detail(format!(
            "a chunk's Content-Type must be {OFFSET_OCTET_STREAM}"
        )));
    }
    let offset = number(headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("upload_offset_required", "send Upload-Offset"))?;
    let checksum = parse_checksum(headers)?;
    let declared = number(headers, &header::CONTENT_LENGTH).ok().flatten();
    let chunk = Chunk {
        offset,
        checksum,
        declared,
        body: request.into_body().into_data_stream(),
    };
    let Caller { principal, origin } = caller;
    let upload = state.files.append(&principal, id, chunk, origin).await?;
    Ok((StatusCode::NO_CONTENT, progress(&upload, &base)).into_response())
}

/// Terminate an upload (tus termination): its chunks are deleted; it is gone at once.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, description = "Locked", body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<UploadId>,
) -> ApiResult<StatusCode> {
    let Caller { principal, origin } = caller;
    state.files.terminate_upload(&principal, id, origin).await?;
    Ok(StatusCode::NO_CONTENT)
}
