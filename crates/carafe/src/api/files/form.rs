//! Reading an upload request: a form (`multipart/form-data`, with one `file` part and an
//! optional `metadata` JSON part) or a raw body. (S3 multipart uploads are another thing:
//! storage's.) Declared sizes over the bucket's limit are refused before anything is read;
//! counted ones as soon as they pass it. Every failure answers with a problem and leaves no
//! temporary file.

use axum::extract::{FromRequest, Multipart, Request};
use carafe_core::files::{BucketName, FileRecord};
use http::{StatusCode, header};
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::files::records::UploadParams;
use crate::api::state::AppState;
use crate::context::Origin;
use crate::files::receive::accept::{UploadError, UploadMeta};
use crate::files::receive::body::{ReceiveError, receive};
use crate::files::serve::disposition::parse_filename;
use crate::files::store::storage::temp::Received;

/// Parts a form may have (the file, its metadata, and a few the client's form
/// library may add).
const MAX_PARTS: usize = 8;
/// Largest `metadata` part or `Carafe-Metadata` header.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Allowance for the form's framing when judging a declared `Content-Length`.
const MULTIPART_SLACK: u64 = 64 * 1024;

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
        .detail(format!("files in this bucket may be at most {limit} bytes"))
        .with("max_size", limit)
}

fn receive_error(e: ReceiveError) -> ApiError {
    match e {
        ReceiveError::TooLarge { limit } => too_large(limit),
        ReceiveError::Body(_) => ApiError::bad_request(
            "body_incomplete",
            "the upload ended before its declared length, or could not be read",
        ),
        ReceiveError::Io(e) => ApiError::unavailable(&e),
    }
}

pub(crate) fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Empty => ApiError::bad_request("file_empty", "the file is empty"),
        UploadError::Type { code, detail } => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, code).detail(detail)
        }
        UploadError::NotAllowed(kind) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_not_allowed")
                .detail(format!("this bucket does not accept {kind} files"))
                .with("detected_type", kind)
        }
        UploadError::Storage(e) => ApiError::unavailable(&e),
        UploadError::NoMasterKey => {
            tracing::error!("an encrypting bucket received an upload but no master_key is set");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing")
                .detail("the bucket encrypts files but the server has no master key")
        }
        UploadError::ScannerMissing => {
            tracing::warn!(
                "an upload to a bucket that requires scanning was refused: no clamd_url"
            );
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "scanner_unavailable")
                .detail("this bucket requires virus scanning and no scanner is configured")
        }
        UploadError::Store(e) => e.into(),
    }
}

fn parse_metadata(text: &[u8]) -> ApiResult<Value> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid("metadata", "at most 16 KiB of JSON"));
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::invalid("metadata", "must be a JSON object")),
    }
}

/// Receives the upload in `request` into the bucket named by `params` and records it.
pub async fn receive_upload(
    state: &AppState,
    request: Request,
    params: &UploadParams,
    owner: Option<String>,
    origin: Origin,
) -> ApiResult<FileRecord> {
    let name = params.bucket.as_deref().unwrap_or(BucketName::DEFAULT);
    let name = BucketName::parse(name).map_err(|e| ApiError::invalid("bucket", e))?;
    let files = &state.files;
    let Some(bucket) = files.upload_bucket(&name).await.map_err(upload_error)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "bucket_not_found")
            .detail(format!("there is no bucket `{name}`")));
    };
    let limit = bucket.policy.max_size.min(files.settings.max_upload_bytes);
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"));
    let slack = if multipart { MULTIPART_SLACK } else { 0 };
    if declared.is_some_and(|n| n > limit.saturating_add(slack)) {
        return Err(too_large(limit));
    }
    let dir = files.storage.temp_dir();
    let (received, file_name, metadata) = if multipart {
        let form = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        read_form(form, &dir, limit).await?
    } else {
        let headers = request.headers();
        let file_name = headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_filename)
            .or_else(|| params.name.clone());
        let metadata = match headers.get("carafe-metadata") {
            Some(v) => parse_metadata(v.as_bytes())?,
            None => Value::Object(Default::default()),
        };
        let body = request.into_body().into_data_stream();
        let received = receive(body, &dir, limit).await.map_err(receive_error)?;
        (received, file_name, metadata)
    };
    let meta = UploadMeta {
        bucket,
        name: file_name,
        owner,
        metadata,
        origin,
    };
    files.accept(received, meta).await.map_err(upload_error)
}

async fn read_form(
    mut form: Multipart,
    dir: &std::path::Path,
    limit: u64,
) -> ApiResult<(Received, Option<String>, Value)> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request("invalid_multipart", e.body_text())
    };
    let mut file: Option<(Received, Option<String>)> = None;
    let mut metadata = Value::Object(Default::default());
    let mut parts = 0;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::bad_request(
                "too_many_parts",
                format!("a multipart upload may have at most {MAX_PARTS} parts"),
            ));
        }
        match field.name() {
            Some("file") => {
                if file.is_some() {
                    return Err(ApiError::bad_request(
                        "multiple_files",
                        "send one `file` part per upload",
                    ));
                }
                let name = field.file_name().map(str::to_owned);
                let received = receive(field, dir, limit).await.map_err(|e| match e {
                    // Inside a form, a body that cannot be read is a broken form.
                    ReceiveError::Body(detail) => {
                        ApiError::bad_request("invalid_multipart", detail)
                    }
                    e => receive_error(e),
                })?;
                file = Some((received, name));
            }
            Some("metadata") => {
                let mut field = field;
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_METADATA_BYTES {
                        break;
                    }
                }
                metadata = parse_metadata(&text)?;
            }
            _ => {
                // Other parts are read past (bounded by the part count and body limit).
                let mut field = field;
                let mut seen = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    seen += chunk.len() as u64;
                    if seen > MAX_METADATA_BYTES as u64 {
                        return Err(ApiError::bad_request(
                            "unexpected_part",
                            "only `file` and `metadata` parts are read",
                        ));
                    }
                }
            }
        }
    }
    let Some((received, name)) = file else {
        return Err(ApiError::bad_request(
            "file_missing",
            "the form has no `file` part",
        ));
    };
    Ok((received, name, metadata))
}
