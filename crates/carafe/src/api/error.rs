//! The one mapping from errors to HTTP: RFC 9457 `application/problem+json` with a stable
//! machine `code`, the request id, and `errors[]` for field problems. Every handler, extractor
//! and fallback answers failures through `ApiError`, so clients parse one shape everywhere.
//! A 500 or 503 says nothing internal; the cause goes to the log under the request id.
//! Capabilities' errors become problems here (the files capability's, being many, in `files`).

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use carafe_core::StoreError;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::request_id;

mod files;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem as clients see it (the OpenAPI schema of every error answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:carafe:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable, machine-readable reason, e.g. `insufficient_scope`.
    pub code: String,
    /// The request's `X-Request-Id`, to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// One entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

pub use crate::context::FieldError;

/// An error answer. Boxed, so `Result<T, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    detail: Option<Cow<'static, str>>,
    errors: Vec<FieldError>,
    extra: Map<String, Value>,
    headers: HeaderMap,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        ApiError(Box::new(Inner {
            status,
            code,
            detail: None,
            errors: Vec::new(),
            extra: Map::new(),
            headers: HeaderMap::new(),
        }))
    }

    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.0.errors.push(FieldError::new(field, message));
        self
    }

    /// Adds a member to the problem object (RFC 9457 extension members).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &'static str {
        self.0.code
    }

    pub fn bad_request(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code).detail(detail)
    }

    /// 422 for a well-formed request whose values are not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            .detail("the request has invalid fields")
            .field(field, message)
    }

    /// 422 naming every invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            .detail("the request has invalid fields")
            .fields(errors)
    }

    /// Adds refused fields as they are (with their line and column, if any).
    pub fn fields(mut self, errors: Vec<FieldError>) -> Self {
        self.0.errors.extend(errors);
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found").detail("no such resource")
    }

    pub fn conflict(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, code).detail(detail)
    }

    /// 500: the cause is logged with the request id, the client learns nothing internal.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            .detail("something went wrong on our side; quote the request_id when reporting it")
    }

    /// 503 when a dependency (the database) is down; the client may retry.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            .detail("a dependency is unavailable; retry later")
            .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    fn title(&self) -> &'static str {
        self.0.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Conflict(_) => {
                ApiError::conflict("conflict", "the resource conflicts with an existing one")
            }
            StoreError::Unavailable(source) => ApiError::unavailable(&chain(&e, source.as_ref())),
            StoreError::Other(source) => ApiError::internal(&chain(&e, source.as_ref())),
        }
    }
}

impl From<crate::context::Denied> for ApiError {
    fn from(e: crate::context::Denied) -> Self {
        use crate::context::Denied;
        match e {
            Denied::Scope(scope) => {
                let challenge = format!(
                    "Bearer realm=\"carafe\", error=\"insufficient_scope\", scope=\"{scope}\""
                );
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope")
                    .detail(e.to_string())
                    .with("required_scope", scope.as_str())
                    .header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_str(&challenge).expect("ascii"),
                    )
            }
            Denied::KeyRequired => {
                ApiError::new(StatusCode::FORBIDDEN, "api_key_required").detail(e.to_string())
            }
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::Denied(e) => e.into(),
            crate::audit::AuditError::Store(e) => e.into(),
        }
    }
}

impl From<crate::jobs::Error> for ApiError {
    fn from(e: crate::jobs::Error) -> Self {
        use crate::jobs::Error;
        match e {
            Error::Enqueue(e) => e.into(),
            Error::Reserved(e) => e.into(),
            Error::Invalid(field, message) => ApiError::invalid(field, message),
            Error::NotFound => ApiError::not_found(),
            Error::Store(e) => e.into(),
        }
    }
}

impl From<crate::mail::Error> for ApiError {
    fn from(e: crate::mail::Error) -> Self {
        use crate::mail::Error;
        match e {
            Error::Invalid(fields) => ApiError::validation(fields),
            Error::Template(fields) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "template_error")
                    .detail("the template cannot be compiled or rendered: see errors[]")
                    .fields(fields)
            }
            Error::NotFound => ApiError::not_found(),
            Error::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code).detail(message)
            }
            Error::Refused { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, code).detail(message)
            }
            Error::Unavailable { code, message } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code).detail(message)
            }
            Error::Store(e) => e.into(),
        }
    }
}

impl From<crate::jobs::request::EnqueueError> for ApiError {
    fn from(e: crate::jobs::request::EnqueueError) -> Self {
        use crate::jobs::request::EnqueueError;
        let (code, fields) = match &e {
            EnqueueError::Invalid(f) => ("validation_failed", f),
            EnqueueError::TargetNotAllowed(f) => ("target_not_allowed", f),
        };
        let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code).detail(e.to_string());
        fields.iter().fold(error, |error, f| {
            error.field(f.field.clone(), f.message.clone())
        })
    }
}

impl From<crate::jobs::access::ReservedQueue> for ApiError {
    fn from(e: crate::jobs::access::ReservedQueue) -> Self {
        let queue = e.queue.clone();
        ApiError::new(StatusCode::FORBIDDEN, "reserved_queue")
            .detail(e.to_string())
            .with("queue", queue)
    }
}

fn chain(e: &StoreError, source: &dyn std::error::Error) -> String {
    format!("{e}: {source}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.title().to_owned();
        let inner = *self.0;
        let problem = Problem {
            kind: format!("urn:carafe:problem:{}", inner.code),
            title,
            status: inner.status.as_u16(),
            detail: inner.detail.map(Cow::into_owned),
            code: inner.code.to_owned(),
            request_id: request_id::current(),
            errors: inner.errors,
        };
        let mut body = match serde_json::to_value(&problem) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        body.extend(inner.extra);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (inner.status, bytes).into_response();
        response.headers_mut().extend(inner.headers);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Fallback for paths that match no route.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found").detail("no route matches this path")
}

/// Fallback for a known path asked with a method it does not support (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .detail("this path does not support this method")
}
