//! The files capability's errors as problems: downloads refused or not answered with bytes.

use http::{HeaderValue, StatusCode, header};

use super::ApiError;
use crate::files::serve::access::DownloadError;
use crate::files::serve::download::ServeError;

/// The master key that encrypts a file or an upload is not configured: a configuration
/// problem, said as unavailable and never worked around.
fn key_missing(what: &'static str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing").detail(what)
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
