//! The files capability's errors as problems: buckets, records, downloads.

use http::{HeaderValue, StatusCode, header};

use super::ApiError;
use crate::files::buckets::BucketError;
use crate::files::records::RecordError;
use crate::files::serve::access::DownloadError;
use crate::files::serve::download::ServeError;

/// The master key that encrypts a file or an upload is not configured: a configuration
/// problem, said as unavailable and never worked around.
fn key_missing(what: &'static str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing").detail(what)
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
