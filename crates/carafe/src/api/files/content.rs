//! HTTP handlers that serve file bytes: a file's content and its thumbnails. They say how the
//! reader asks — an API key with `files` or the owner's token (also as `?access_token=`, for
//! `<img src>`), a signed link, or nothing (public buckets) — and the files capability
//! (`files::serve::access`) decides, serves and audits.

use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;
use carafe_core::files::FileId;
use http::header;
use http::request::Parts;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::auth::StreamPrincipal;
use crate::api::client::Client;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::Principal;
use crate::files::serve::access::{Authenticate, Download, Reader};
use crate::files::serve::links::LinkQuery;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentParams {
    /// `1` forces a download (`Content-Disposition: attachment`).
    pub download: Option<String>,
    /// Signed links: the expiry (unix seconds).
    pub expires: Option<i64>,
    /// Signed links: `inline` or `attachment`.
    pub disposition: Option<String>,
    /// Signed links: the name to save under.
    pub filename: Option<String>,
    /// Signed links: the signature.
    pub signature: Option<String>,
    /// An end-user token, for clients that cannot send headers.
    pub access_token: Option<String>,
}

/// Credentials checked as streaming endpoints check them: the header, or `?access_token=`.
struct StreamCredentials<'a>(&'a AppState);

impl Authenticate for StreamCredentials<'_> {
    type Error = ApiError;

    async fn principal(&self, request: &mut Parts) -> ApiResult<Principal> {
        let StreamPrincipal(principal) =
            StreamPrincipal::from_request_parts(request, self.0).await?;
        Ok(principal)
    }
}

async fn serve(
    state: &AppState,
    request: Request,
    params: ContentParams,
    id: FileId,
    thumbnail: Option<String>,
    client: Client,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    let reader = if params.signature.is_some() {
        Reader::Link(LinkQuery {
            expires: params.expires,
            disposition: params.disposition,
            filename: params.filename,
            signature: params.signature,
        })
    } else if parts.headers.contains_key(header::AUTHORIZATION) || params.access_token.is_some() {
        Reader::Credentials
    } else {
        Reader::Anonymous
    };
    let download = Download {
        id,
        thumbnail,
        reader,
        attachment: matches!(params.download.as_deref(), Some("1" | "true")),
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.as_str().to_owned()),
        ip: client.ip.map(|ip| ip.to_string()),
        user_agent: client.user_agent,
    };
    let credentials = StreamCredentials(state);
    Ok(state.files.download(parts, download, &credentials).await?)
}

/// Download a file's content: ranges, validators, signed links.
#[utoipa::path(get, path = "/api/v1/files/{id}/content", tag = "files",
    params(("id" = String, Path), ContentParams),
    responses((status = 200, description = "The bytes"), (status = 206, description = "Ranges"),
              (status = 304), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 416, body = Problem)),
    security((), ("bearer" = ["files"])))]
pub async fn content(
    State(state): State<AppState>,
    Path(id): Path<FileId>,
    Query(params): Query<ContentParams>,
    client: Client,
    request: Request,
) -> ApiResult<Response> {
    serve(&state, request, params, id, None, client).await
}

/// Download one of a file's thumbnails.
#[utoipa::path(get, path = "/api/v1/files/{id}/thumbnails/{name}", tag = "files",
    params(("id" = String, Path), ("name" = String, Path), ContentParams),
    responses((status = 200, description = "The thumbnail"), (status = 304),
              (status = 404, body = Problem)),
    security((), ("bearer" = ["files"])))]
pub async fn thumbnail(
    State(state): State<AppState>,
    Path((id, name)): Path<(FileId, String)>,
    Query(params): Query<ContentParams>,
    client: Client,
    request: Request,
) -> ApiResult<Response> {
    serve(&state, request, params, id, Some(name), client).await
}
