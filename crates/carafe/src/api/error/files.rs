//! The files capability's errors as problems: uploads of every kind (with the tus headers
//! that tell a resumable client where its upload stands), buckets, records, downloads.

use http::{HeaderValue, StatusCode, header};

use super::ApiError;
use crate::api::files::tus_protocol::{CARAFE_FILE_ID, CARAFE_UPLOAD_ERROR, UPLOAD_OFFSET, value};
use crate::files::buckets::BucketError;
use crate::files::receive::accept::{UploadError, UploadFailed};
use crate::files::receive::body::ReceiveError;
use crate::files::receive::direct::DirectError;
use crate::files::receive::direct::signing::SignatureError;
use crate::files::receive::tus::{MAX_CHUNKS, TusError};
use crate::files::records::RecordError;
use crate::files::serve::access::DownloadError;
use crate::files::serve::download::ServeError;

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
        .detail(format!("files in this bucket may be at most {limit} bytes"))
        .with("max_size", limit)
}

/// The master key that encrypts a file or an upload is not configured: a configuration
/// problem, said as unavailable and never worked around.
fn key_missing(what: &'static str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing").detail(what)
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Denied(e) => e.into(),
            UploadError::Invalid(f) => ApiError::invalid(f.field, f.message),
            UploadError::NoBucket(name) => ApiError::new(StatusCode::NOT_FOUND, "bucket_not_found")
                .detail(format!("there is no bucket `{name}`")),
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
                key_missing("the bucket encrypts files but the server has no master key")
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
}

/// A body that could not be received, outside a form (where it is a broken form).
impl From<ReceiveError> for ApiError {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::TooLarge { limit } => too_large(limit),
            ReceiveError::Body(_) => ApiError::bad_request(
                "body_incomplete",
                "the upload ended before its declared length, or could not be read",
            ),
            ReceiveError::Io(e) => ApiError::unavailable(&e),
        }
    }
}

/// The body's own failures are already answers (the web layer read it).
impl From<UploadFailed<ApiError>> for ApiError {
    fn from(e: UploadFailed<ApiError>) -> Self {
        match e {
            UploadFailed::Refused(e) => e.into(),
            UploadFailed::Body(e) => e,
        }
    }
}

impl From<DirectError> for ApiError {
    fn from(e: DirectError) -> Self {
        match e {
            DirectError::Denied(e) => e.into(),
            DirectError::Invalid(f) => ApiError::invalid(f.field, f.message),
            DirectError::KindNotAllowed(_) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_not_allowed")
                    .detail(e.to_string())
            }
            DirectError::Empty => ApiError::bad_request("file_empty", "the file is empty"),
            DirectError::Encrypted => ApiError::new(StatusCode::CONFLICT, "bucket_encrypted")
                .detail(
                    "this bucket encrypts files at rest; upload through POST /api/v1/files or tus",
                ),
            DirectError::TooLarge { limit } => too_large(limit),
            DirectError::NameNotAllowed => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_not_allowed")
                    .detail("the name's extension is not a type this bucket accepts")
            }
            DirectError::NotFound => ApiError::not_found(),
            DirectError::Expired => ApiError::new(StatusCode::GONE, "upload_expired")
                .detail("the upload has expired; start a new one"),
            DirectError::Completed(id) => ApiError::conflict(
                "upload_completed",
                "the upload was already completed; the file is at its URL",
            )
            .with("file", id.to_string()),
            DirectError::InProgress => ApiError::conflict(
                "upload_in_progress",
                "another request is completing this upload",
            ),
            DirectError::Parts(detail) => ApiError::bad_request("invalid_parts", detail),
            DirectError::Missing => {
                ApiError::bad_request("upload_missing", "nothing has been uploaded yet")
            }
            DirectError::SizeMismatch { declared, actual } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch")
                    .detail(format!("{actual} bytes arrived, {declared} were declared"))
                    .with("declared", declared)
                    .with("actual", actual)
            }
            DirectError::SizeExceeded { declared } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch")
                    .detail(format!("more than the declared {declared} bytes arrived"))
                    .with("declared", declared)
            }
            DirectError::BodyIncomplete => ApiError::bad_request(
                "body_incomplete",
                "the upload ended early or could not be read",
            ),
            DirectError::Url(SignatureError::Expired) => {
                ApiError::new(StatusCode::FORBIDDEN, "link_expired")
                    .detail("the upload URL has expired")
            }
            DirectError::Url(SignatureError::Invalid) => {
                ApiError::new(StatusCode::FORBIDDEN, "link_invalid")
                    .detail("the upload URL's signature is not valid")
            }
            DirectError::Refused(e) => e.into(),
            DirectError::Storage(e) => ApiError::unavailable(&e),
            DirectError::Store(e) => e.into(),
        }
    }
}

impl From<TusError> for ApiError {
    fn from(e: TusError) -> Self {
        match e {
            TusError::Denied(e) => e.into(),
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
            TusError::TooLarge { limit } => too_large(limit),
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
                format!("an upload may have at most {MAX_CHUNKS} chunks; send larger ones"),
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
            TusError::Empty => {
                ApiError::bad_request("file_empty", "Upload-Length must be positive")
            }
            TusError::Body(_) => ApiError::bad_request(
                "body_incomplete",
                "the chunk ended early or could not be read; it was discarded",
            ),
            TusError::Refused(e) => e.into(),
            // The answer to the chunk; the handler adds where the upload is.
            TusError::FirstChunk { error, .. } => (*error).into(),
            TusError::KeyMissing(e) => {
                tracing::error!(error = %e, "cannot seal or open an upload's chunks");
                key_missing("the key that encrypts this upload is not configured on this server")
            }
            TusError::Corrupt => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "upload_corrupt")
                .detail(
                    "a stored chunk of this upload is damaged; the upload has ended, start again",
                )
                .header(
                    CARAFE_UPLOAD_ERROR,
                    HeaderValue::from_static("upload_corrupt"),
                ),
            TusError::Storage(e) => ApiError::unavailable(&e),
            TusError::Store(e) => e.into(),
        }
    }
}

impl From<BucketError> for ApiError {
    fn from(e: BucketError) -> Self {
        match e {
            BucketError::Denied(e) => e.into(),
            BucketError::NotFound => ApiError::not_found(),
            BucketError::ManagedByConfig => ApiError::conflict(
                "bucket_managed_by_config",
                "this bucket is defined in the configuration file; change it there",
            ),
            BucketError::Invalid(errors) => ApiError::validation(errors),
            BucketError::Store(e) => e.into(),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Denied(e) => e.into(),
            RecordError::NotFound => ApiError::not_found(),
            RecordError::NotReady => {
                ApiError::conflict("file_not_ready", "only ready files can be linked")
            }
            RecordError::LegalHold => ApiError::conflict(
                "legal_hold",
                "the file is under legal hold; release the hold to delete it",
            ),
            RecordError::Invalid(f) => ApiError::invalid(f.field, f.message),
            RecordError::Store(e) => e.into(),
        }
    }
}

/// Credentials that were not accepted are already answers (the web layer checked them).
impl From<DownloadError<ApiError>> for ApiError {
    fn from(e: DownloadError<ApiError>) -> Self {
        match e {
            DownloadError::NotFound => ApiError::not_found(),
            DownloadError::LinkExpired => ApiError::new(StatusCode::FORBIDDEN, "link_expired")
                .detail("this link has expired; ask for a new one"),
            DownloadError::LinkInvalid => ApiError::new(StatusCode::FORBIDDEN, "link_invalid")
                .detail("this link is not valid for this file"),
            DownloadError::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated")
                    .detail("this file needs an API key, a token or a signed link")
            }
            DownloadError::Credentials(e) => e,
            DownloadError::Denied(e) => e.into(),
            DownloadError::NotReady(status) => {
                ApiError::conflict("file_not_ready", "the file is not ready to be served")
                    .with("file_status", status.as_str())
            }
            DownloadError::KeyMissing => {
                key_missing("the key that encrypts this file is not configured on this server")
            }
            DownloadError::Serve(e) => e.into(),
            DownloadError::Store(e) => e.into(),
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::PreconditionFailed => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed")
                    .detail(e.to_string())
            }
            ServeError::RangeNotSatisfiable { size } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
                    .detail(e.to_string())
                    .header(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&crate::files::serve::range::unsatisfied_range(size))
                            .expect("ascii"),
                    )
            }
            ServeError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}
