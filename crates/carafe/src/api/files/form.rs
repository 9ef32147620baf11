//! Reading an upload request: a form (`multipart/form-data`, with one `file` part and an
//! optional `metadata` JSON part) or a raw body. (S3 multipart uploads are another thing:
//! storage's.) Declared sizes over the bucket's limit are refused before anything is read;
//! counted ones as soon as they pass it. Every failure answers with a problem and leaves no
//! temporary file.

use std::path::Path;

use axum::extract::{FromRequest, Multipart, Request};
use http::header;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::state::AppState;
use crate::files::receive::accept::{BodyRead, UploadBody};
use crate::files::receive::body::{ReceiveError, receive};
use crate::files::serve::disposition::parse_filename;
use crate::files::store::storage::temp::Received;

/// Parts a form may have (the file, its metadata, and a few the client's form
/// library may add).
const MAX_PARTS: usize = 8;
/// Largest `metadata` part or `Carafe-Metadata` header.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Allowance for the form's framing when judging a declared `Content-Length`.
const FORM_SLACK: u64 = 64 * 1024;

fn parse_metadata(text: &[u8]) -> ApiResult<Value> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid("metadata", "at most 16 KiB of JSON"));
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::invalid("metadata", "must be a JSON object")),
    }
}

/// An upload request's body, read once the capability knows the bucket and its limit.
pub struct Form<'a> {
    request: Request,
    /// The name to use when a raw body's `Content-Disposition` gives none (`?name=`).
    name: Option<String>,
    state: &'a AppState,
}

impl<'a> Form<'a> {
    pub fn new(request: Request, name: Option<String>, state: &'a AppState) -> Self {
        Form {
            request,
            name,
            state,
        }
    }
}

impl UploadBody for Form<'_> {
    type Error = ApiError;

    async fn receive(self, dir: &Path, limit: u64) -> ApiResult<BodyRead> {
        let Form {
            request,
            name,
            state,
        } = self;
        let headers = request.headers();
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"));
        let slack = if is_form { FORM_SLACK } else { 0 };
        if declared.is_some_and(|n| n > limit.saturating_add(slack)) {
            return Err(ReceiveError::TooLarge { limit }.into());
        }
        if is_form {
            let form = Multipart::from_request(request, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
            return read_form(form, dir, limit).await;
        }
        let headers = request.headers();
        let name = headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_filename)
            .or(name);
        let metadata = match headers.get("carafe-metadata") {
            Some(v) => parse_metadata(v.as_bytes())?,
            None => Value::Object(Default::default()),
        };
        let body = request.into_body().into_data_stream();
        let received = receive(body, dir, limit).await?;
        Ok(BodyRead {
            received,
            name,
            metadata,
        })
    }
}

async fn read_form(mut form: Multipart, dir: &Path, limit: u64) -> ApiResult<BodyRead> {
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
                    e => e.into(),
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
    Ok(BodyRead {
        received,
        name,
        metadata,
    })
}
