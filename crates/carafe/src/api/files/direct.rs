//! HTTP for direct uploads: start a session (`POST /api/v1/files/direct`), send the bytes
//! (to S3's presigned URLs, or on local disk to `PUT /api/v1/files/direct/{id}` with a signed
//! query), then `POST /api/v1/files/{id}/complete`. Handlers only translate; the rules are in
//! `direct/mod.rs`.
//!
//! Completing twice answers `409 upload_completed` with the file's id (the first answer may
//! have been lost; the file itself is at `GET /api/v1/files/{id}`).

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::{BucketName, DirectState};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::client::Client;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::form::upload_error;
use crate::api::files::views::FileView;
use crate::api::json::Json;
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;
use crate::files::incoming_key;
use crate::files::receive::body::{ReceiveError, receive};
use crate::files::receive::direct::signing::{self, PutQuery, SignatureError};
use crate::files::receive::direct::{DirectError, DirectRequest, Plan};

fn direct_error(e: DirectError) -> ApiError {
    match e {
        DirectError::Empty => ApiError::bad_request("file_empty", "the file is empty"),
        DirectError::Encrypted => ApiError::new(StatusCode::CONFLICT, "bucket_encrypted")
            .detail("this bucket encrypts files at rest; upload through POST /api/v1/files or tus"),
        DirectError::TooLarge { limit } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large")
                .detail(format!("files in this bucket may be at most {limit} bytes"))
                .with("max_size", limit)
        }
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
        DirectError::Refused(e) => upload_error(e),
        DirectError::Storage(e) => ApiError::unavailable(&e),
        DirectError::Store(e) => e.into(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectBody {
    /// The bucket (default `default`).
    pub bucket: Option<String>,
    /// The file's name; its extension must be a type the bucket accepts.
    pub name: String,
    /// The exact size in bytes; what arrives must match it.
    pub size: u64,
    /// The type the client expects (e.g. `pdf`); must be one the bucket accepts.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The end user the file belongs to (API keys only).
    pub owner: Option<String>,
    /// A JSON object kept with the file.
    pub metadata: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartView {
    pub part_number: u32,
    pub url: String,
    pub range_start: u64,
    /// Inclusive.
    pub range_end: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DirectView {
    /// The session's id, which will be the file's id.
    pub id: String,
    /// `PUT` for one request; absent for a multipart plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers to send with the PUT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// Each part is PUT to its URL; keep each answer's `ETag` for `complete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartView>>,
    #[schema(value_type = String, format = DateTime)]
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
    pub complete_url: String,
}

/// Start a direct upload: the declared size and name are checked against the bucket, and
/// the answer says where to send the bytes (one PUT, or parts on S3 for large files).
#[utoipa::path(post, path = "/api/v1/files/direct", tag = "files", request_body = DirectBody,
    responses((status = 201, body = DirectView), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 400, body = Problem)),
    security(("bearer" = ["files"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    Json(body): Json<DirectBody>,
) -> ApiResult<Response> {
    principal.require(Scope::Files)?;
    let owner = match &principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Key(_) => body.owner.clone(),
    };
    if owner
        .as_ref()
        .is_some_and(|o| o.is_empty() || o.len() > 200)
    {
        return Err(ApiError::invalid("owner", "1-200 characters"));
    }
    if body.name.is_empty() || body.name.len() > 1000 {
        return Err(ApiError::invalid("name", "1-1000 characters"));
    }
    let metadata = match body.metadata {
        None => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) if v.to_string().len() <= 16 * 1024 => v,
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata",
                "a JSON object of at most 16 KiB",
            ));
        }
    };
    let name = body.bucket.as_deref().unwrap_or(BucketName::DEFAULT);
    let name = BucketName::parse(name).map_err(|e| ApiError::invalid("bucket", e))?;
    let Some(bucket) = state
        .files
        .upload_bucket(&name)
        .await
        .map_err(upload_error)?
    else {
        return Err(ApiError::invalid("bucket", "no such bucket"));
    };
    // A declared type must be one the bucket takes and the name's extension stands for.
    let ext = crate::files::receive::filename::extension(
        &crate::files::receive::filename::sanitize(&body.name),
    );
    if let Some(kind) = &body.kind
        && (!bucket.policy.allows(kind)
            || !ext.as_deref().is_some_and(|e| {
                crate::files::receive::direct::kinds_for(e)
                    .iter()
                    .any(|k| k.name() == kind)
            }))
    {
        return Err(
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "type_not_allowed").detail(format!(
                "`{kind}` is not a type this bucket accepts under this name"
            )),
        );
    }
    let request = DirectRequest {
        bucket,
        name: body.name,
        size: body.size,
        owner,
        metadata,
    };
    let (session, plan) = state
        .files
        .start_direct(request, &base.join(""))
        .await
        .map_err(direct_error)?;
    let mut view = DirectView {
        id: session.id.to_string(),
        method: None,
        url: None,
        headers: None,
        part_size: None,
        parts: None,
        expires_at: session.expires_at,
        complete_url: base.join(&format!("/api/v1/files/{}/complete", session.id)),
    };
    match plan {
        Plan::Single { url } => {
            view.method = Some("PUT");
            view.url = Some(url);
            view.headers = Some(BTreeMap::from([(
                "Content-Length".to_owned(),
                session.size.to_string(),
            )]));
        }
        Plan::Parts { part_size, parts } => {
            view.part_size = Some(part_size);
            view.parts = Some(
                parts
                    .into_iter()
                    .map(|p| PartView {
                        part_number: p.number,
                        url: p.url,
                        range_start: p.start,
                        range_end: p.end,
                    })
                    .collect(),
            );
        }
    }
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Send a direct upload's bytes (local storage): the URL `POST /api/v1/files/direct` gave,
/// signed; no other authentication. The body must be exactly the declared size.
#[utoipa::path(put, path = "/api/v1/files/direct/{id}", tag = "files",
    params(("id" = String, Path), ("expires" = i64, Query), ("signature" = String, Query)),
    request_body(content_type = "application/octet-stream", description = "The file's bytes"),
    responses((status = 200, description = "Stored; now call `complete`"),
              (status = 403, body = Problem), (status = 413, body = Problem),
              (status = 422, body = Problem)))]
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<carafe_core::files::FileId>,
    Query(q): Query<PutQuery>,
    request: Request,
) -> ApiResult<Response> {
    let files = &state.files;
    match signing::verify(files.links.key(), id, &q, now().unix_timestamp()) {
        Ok(()) => {}
        Err(SignatureError::Expired) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "link_expired")
                .detail("the upload URL has expired"));
        }
        Err(SignatureError::Invalid) => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "link_invalid")
                .detail("the upload URL's signature is not valid"));
        }
    }
    if files.storage.s3().is_some() {
        return Err(ApiError::not_found());
    }
    let session = files.open_direct(id).await.map_err(direct_error)?;
    let body = request.into_body().into_data_stream();
    let received = receive(body, &files.storage.temp_dir(), session.size)
        .await
        .map_err(|e| match e {
            ReceiveError::TooLarge { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch")
                    .detail(format!(
                        "more than the declared {} bytes arrived",
                        session.size
                    ))
                    .with("declared", session.size)
            }
            ReceiveError::Body(_) => ApiError::bad_request(
                "body_incomplete",
                "the upload ended early or could not be read",
            ),
            ReceiveError::Io(e) => ApiError::unavailable(&e),
        })?;
    if received.size != session.size {
        return Err(direct_error(DirectError::SizeMismatch {
            declared: session.size,
            actual: received.size,
        }));
    }
    // Held while storing, so a `complete` can never check bytes this PUT then replaces.
    let store = files.store();
    if !store
        .transition_direct(id, DirectState::Open, DirectState::Completing)
        .await?
    {
        return Err(direct_error(DirectError::InProgress));
    }
    let stored = files
        .storage
        .put_received(&incoming_key(id), received)
        .await;
    store
        .transition_direct(id, DirectState::Completing, DirectState::Open)
        .await?;
    stored.map_err(|e| ApiError::unavailable(&e))?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// For multipart plans: every part's number and the `ETag` its PUT answered.
    pub parts: Option<Vec<CompletedPart>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompleteParams {
    /// Wait up to this many seconds (at most 60) for processing to finish.
    pub wait: Option<u64>,
}

/// Finish a direct upload: what arrived is checked (size, type from the bytes) and recorded
/// like any other upload, then scanned and processed.
#[utoipa::path(post, path = "/api/v1/files/{id}/complete", tag = "files",
    params(("id" = String, Path), CompleteParams), request_body = CompleteBody,
    responses((status = 202, body = FileView, headers(("Location" = String))),
              (status = 201, description = "Processed within `wait`", body = FileView),
              (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 410, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["files"])))]
#[allow(clippy::too_many_arguments)] // axum extractors, one per concern
pub async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    client: Client,
    request_id: Option<axum::Extension<RequestId>>,
    Path(id): Path<carafe_core::files::FileId>,
    Query(params): Query<CompleteParams>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let body: CompleteBody = if body.iter().all(u8::is_ascii_whitespace) {
        CompleteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    principal.require(Scope::Files)?;
    let files = &state.files;
    // Only the owner (or a key) may learn the session exists.
    match files.store().get_direct(id).await? {
        Some(s) if principal.may_see(Scope::Files, s.owner.as_deref()) => {}
        _ => return Err(ApiError::not_found()),
    }
    let session = files.open_direct(id).await.map_err(direct_error)?;
    let parts = body
        .parts
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let origin = crate::api::files::records::origin(&principal, request_id.as_deref(), client);
    let file = files
        .complete_direct(session, parts, origin)
        .await
        .map_err(direct_error)?;
    crate::api::files::records::accepted(&state, file, params.wait, &base).await
}
