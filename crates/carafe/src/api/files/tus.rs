//! HTTP handlers for tus uploads: they read the tus headers, call the rules in `tus/mod.rs`
//! and answer with tus headers. Who may touch an upload follows files: API keys with `files`
//! reach every upload, end users (tokens with `files`) only their own.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::{Bucket, BucketName, Upload, UploadId};
use carafe_core::keys::Scope;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use super::tus_protocol::*;
use crate::api::client::Client;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::form::upload_error;
use crate::api::files::records::origin;
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;
use crate::files::receive::tus::{Chunk, Creation, TusError};

type RequestIdExt = Option<axum::Extension<RequestId>>;

fn value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).expect("numbers and ids are valid header values")
}

/// The one mapping of upload failures to problems.
fn tus_error(e: TusError) -> ApiError {
    match e {
        TusError::NotFound => ApiError::not_found(),
        TusError::OffsetMismatch { current } => ApiError::conflict(
            "offset_mismatch",
            format!("the upload is at offset {current}; send the chunk that starts there"),
        )
        .with("offset", current)
        .header(UPLOAD_OFFSET, value(current)),
        TusError::Locked => ApiError::conflict(
            "upload_locked",
            "another request is writing to this upload; retry when it is done",
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
        TusError::TooLarge { limit } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
                .detail(format!("files in this bucket may be at most {limit} bytes"))
                .with("max_size", limit)
        }
        TusError::PastLength { remaining } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "upload_length_exceeded")
                .detail(format!(
                    "the chunk goes past Upload-Length; {remaining} bytes remain"
                ))
                .with("remaining", remaining)
        }
        TusError::ChecksumMismatch => ApiError::new(
            StatusCode::from_u16(460).expect("valid"),
            "checksum_mismatch",
        )
        .detail("the chunk does not match Upload-Checksum; it was discarded"),
        TusError::TooManyChunks => ApiError::bad_request(
            "too_many_chunks",
            format!(
                "an upload may have at most {} chunks; send larger ones",
                crate::files::receive::tus::MAX_CHUNKS
            ),
        ),
        TusError::Ended(upload) => {
            let mut e = ApiError::conflict("upload_ended", "the upload has ended")
                .header(UPLOAD_OFFSET, value(upload.offset));
            if let Some(file) = upload.file {
                e = e.header(CARAFE_FILE_ID, value(file));
            }
            if let Some(code) = upload.error_code.as_deref().and_then(|c| c.parse().ok()) {
                e = e.header(CARAFE_UPLOAD_ERROR, code);
            }
            e
        }
        TusError::Empty => ApiError::bad_request("file_empty", "Upload-Length must be positive"),
        TusError::Body(_) => ApiError::bad_request(
            "body_incomplete",
            "the chunk ended early or could not be read; it was discarded",
        ),
        TusError::Refused(e) => upload_error(e),
        TusError::KeyMissing(e) => {
            // A configuration problem: said as unavailable, never worked around.
            tracing::error!(error = %e, "cannot seal or open an upload's chunks");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing")
                .detail("the key that encrypts this upload is not configured on this server")
        }
        TusError::Corrupt => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "upload_corrupt")
            .detail("a stored chunk of this upload is damaged; the upload has ended, start again")
            .header(
                CARAFE_UPLOAD_ERROR,
                HeaderValue::from_static("upload_corrupt"),
            ),
        TusError::Storage(e) => ApiError::unavailable(&e),
        TusError::Store(e) => e.into(),
    }
}

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

/// The upload, if the caller may see it; otherwise not found.
async fn visible(state: &AppState, principal: &Principal, id: UploadId) -> ApiResult<Upload> {
    principal.require(Scope::Files)?;
    match state.files.live_upload(id).await? {
        Some(u) if principal.may_see(Scope::Files, u.owner.as_deref()) => Ok(u),
        _ => Err(ApiError::not_found()),
    }
}

/// Whose the file will be: a token's user, or whom an API key names.
fn owner_for(principal: &Principal, requested: Option<String>) -> ApiResult<Option<String>> {
    let owner = match principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Key(_) => requested,
    };
    if owner
        .as_ref()
        .is_some_and(|o| o.is_empty() || o.len() > 200)
    {
        return Err(ApiError::invalid("owner", "1-200 characters"));
    }
    Ok(owner)
}

/// The bucket named by the `bucket` metadata pair (default `default`).
async fn bucket_for(state: &AppState, metadata: &Map<String, Value>) -> ApiResult<Arc<Bucket>> {
    let name = metadata.get("bucket").and_then(Value::as_str);
    let name = BucketName::parse(name.unwrap_or(BucketName::DEFAULT))
        .map_err(|e| ApiError::invalid("bucket", e))?;
    let bucket = state
        .files
        .upload_bucket(&name)
        .await
        .map_err(upload_error)?;
    bucket.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "bucket_not_found")
            .detail(format!("there is no bucket `{name}`"))
    })
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
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: RequestIdExt,
    Query(params): Query<CreateParams>,
    request: Request,
) -> ApiResult<Response> {
    principal.require(Scope::Files)?;
    let owner = owner_for(&principal, params.owner)?;
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
    let bucket = bucket_for(&state, &metadata).await?;
    let origin = origin(&principal, request_id.as_deref(), client);
    let creation = Creation {
        bucket,
        length,
        metadata,
        owner,
        origin: origin.clone(),
    };
    let upload = state
        .files
        .create_upload(creation)
        .await
        .map_err(tus_error)?;
    let location = value(base.join(&format!("/api/v1/uploads/{}", upload.id)));
    let upload = if with_body {
        let body = request.into_body().into_data_stream();
        let chunk = Chunk {
            offset: 0,
            checksum,
            declared,
            body,
        };
        // The upload exists either way: a failed first chunk says where it is.
        state
            .files
            .append(upload.id, chunk, origin)
            .await
            .map_err(|e| tus_error(e).header(header::LOCATION, location.clone()))?
    } else {
        upload
    };
    let mut h = progress(&upload, &base);
    h.insert(header::LOCATION, location);
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
    let upload = visible(&state, &principal, id).await?;
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
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: RequestIdExt,
    Path(id): Path<UploadId>,
    request: Request,
) -> ApiResult<Response> {
    visible(&state, &principal, id).await?;
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
    let origin = origin(&principal, request_id.as_deref(), client);
    let body = request.into_body().into_data_stream();
    let chunk = Chunk {
        offset,
        checksum,
        declared,
        body,
    };
    let upload = state
        .files
        .append(id, chunk, origin)
        .await
        .map_err(tus_error)?;
    Ok((StatusCode::NO_CONTENT, progress(&upload, &base)).into_response())
}

/// Terminate an upload (tus termination): its chunks are deleted; it is gone at once.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, description = "Locked", body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn terminate(
    State(state): State<AppState>,
    principal: Principal,
    client: Client,
    request_id: RequestIdExt,
    Path(id): Path<UploadId>,
) -> ApiResult<StatusCode> {
    visible(&state, &principal, id).await?;
    let origin = origin(&principal, request_id.as_deref(), client);
    state
        .files
        .terminate_upload(id, origin)
        .await
        .map_err(tus_error)?;
    Ok(StatusCode::NO_CONTENT)
}
