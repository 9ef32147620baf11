//! HTTP for direct uploads: start a session (`POST /api/v1/files/direct`), send the bytes
//! (to S3's presigned URLs, or on local disk to `PUT /api/v1/files/direct/{id}` with a signed
//! query), then `POST /api/v1/files/{id}/complete`. Handlers only translate; the rules are
//! the files capability's (`files::receive::direct`).
//!
//! Completing twice answers `409 upload_completed` with the file's id (the first answer may
//! have been lost; the file itself is at `GET /api/v1/files/{id}`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use carafe_core::files::FileId;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::uploads::accepted;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::files::views::FileView;
use crate::api::json::Json;
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::files::receive::direct::signing::PutQuery;
use crate::files::receive::direct::{DirectRequest, Plan};

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
    let request = DirectRequest {
        bucket: body.bucket,
        name: body.name,
        size: body.size,
        kind: body.kind,
        owner: body.owner,
        metadata: body.metadata,
    };
    let (session, plan) = state.files.start_direct(&principal, request, &base).await?;
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
    Path(id): Path<FileId>,
    Query(q): Query<PutQuery>,
    request: Request,
) -> ApiResult<Response> {
    let body = request.into_body().into_data_stream();
    state.files.put_direct(id, &q, body).await?;
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
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    base: BaseUrl,
    Path(id): Path<FileId>,
    Query(params): Query<CompleteParams>,
    crate::api::json::RawBody(body): crate::api::json::RawBody,
) -> ApiResult<Response> {
    let body: CompleteBody = if body.iter().all(u8::is_ascii_whitespace) {
        CompleteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let parts = body
        .parts
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let Caller { principal, origin } = caller;
    let wait = Duration::from_secs(params.wait.unwrap_or(0));
    let file = state
        .files
        .complete_direct(&principal, id, parts, origin, wait)
        .await?;
    accepted(file, &base)
}
