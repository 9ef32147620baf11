//! HTTP handlers that serve file bytes: a file's content and its thumbnails. Access is by an
//! API key with `files`, the owner's token (also as `?access_token=`, for `<img src>`), a
//! public bucket, or a signed link. Every download is audited.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::response::Response;
use carafe_core::files::{BucketPolicy, FileId, FileRecord, FileStatus, Visibility};
use carafe_core::keys::Scope;
use http::request::Parts;
use http::{Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::api::auth::StreamPrincipal;
use crate::api::client::Client;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::Actor;
use crate::context::Principal;
use crate::files::serve::disposition::DispositionKind;
use crate::files::serve::download::{Content, Delivery, Served, header_value};
use crate::files::serve::links::{LinkError, LinkQuery};
use crate::files::thumb_key;

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

/// Who may read, and how they asked for it.
struct Access {
    actor: String,
    via: &'static str,
    delivery: Delivery,
}

fn forced(params: &ContentParams) -> Option<DispositionKind> {
    matches!(params.download.as_deref(), Some("1" | "true")).then_some(DispositionKind::Attachment)
}

/// Decides whether this request may read `file`.
async fn authorize(
    state: &AppState,
    parts: &mut Parts,
    file: &FileRecord,
    policy: &BucketPolicy,
    params: &ContentParams,
) -> ApiResult<Access> {
    let mut delivery = Delivery {
        disposition: forced(params),
        filename: None,
    };
    if params.signature.is_some() {
        let link = LinkQuery {
            expires: params.expires,
            disposition: params.disposition.clone(),
            filename: params.filename.clone(),
            signature: params.signature.clone(),
        };
        let now = carafe_core::time::now().unix_timestamp();
        return match state.files.links.verify(file.id, &link, now) {
            Ok(grant) => {
                delivery.disposition = delivery.disposition.or(Some(grant.disposition));
                delivery.filename = grant.filename;
                Ok(Access {
                    actor: "link".into(),
                    via: "link",
                    delivery,
                })
            }
            Err(LinkError::Expired) => Err(ApiError::new(StatusCode::FORBIDDEN, "link_expired")
                .detail("this link has expired; ask for a new one")),
            Err(LinkError::Invalid) => Err(ApiError::new(StatusCode::FORBIDDEN, "link_invalid")
                .detail("this link is not valid for this file")),
        };
    }
    let has_credentials =
        parts.headers.contains_key(header::AUTHORIZATION) || params.access_token.is_some();
    if has_credentials {
        let StreamPrincipal(principal) = StreamPrincipal::from_request_parts(parts, state).await?;
        principal.require(Scope::Files)?;
        if !principal.may_see(Scope::Files, file.owner.as_deref()) {
            return Err(ApiError::not_found());
        }
        let actor = principal.actor_id();
        let via = match principal {
            Principal::Key(_) => "key",
            Principal::User(_) => "token",
        };
        return Ok(Access {
            actor,
            via,
            delivery,
        });
    }
    if policy.visibility == Visibility::Public {
        return Ok(Access {
            actor: "anonymous".into(),
            via: "public",
            delivery,
        });
    }
    Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated")
        .detail("this file needs an API key, a token or a signed link"))
}

fn not_ready(file: &FileRecord) -> ApiError {
    ApiError::conflict("file_not_ready", "the file is not ready to be served")
        .with("file_status", file.status.as_str())
}

/// An encrypted file whose master key this server does not have: a configuration problem,
/// answered as unavailable (never with undecrypted bytes).
fn key_missing(id: FileId, e: &crate::files::store::master_keys::KeyError) -> ApiError {
    tracing::error!(file = %id, error = %e, "cannot unwrap an encrypted file's data key");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "encryption_key_missing")
        .detail("the key that encrypts this file is not configured on this server")
}

/// What a download's audit event says besides its origin.
#[derive(Serialize)]
struct Downloaded<'a> {
    via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbnail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<&'a str>,
    status: u16,
}

async fn serve(
    state: &AppState,
    mut parts: Parts,
    params: ContentParams,
    id: FileId,
    thumbnail: Option<&str>,
    client: Client,
) -> ApiResult<Response> {
    let files = &state.files;
    let Some(servable) = files.servable(id).await? else {
        return Err(ApiError::not_found());
    };
    let file = &servable.file;
    // The bucket is read once (from its cache) for visibility, caching and redirects.
    let bucket = files.bucket(&file.bucket).await?;
    let default_policy;
    let policy = match &bucket {
        Some(b) => &b.policy,
        None => {
            default_policy = BucketPolicy::default();
            &default_policy
        }
    };
    let access = authorize(state, &mut parts, file, policy, &params).await?;
    if file.status != FileStatus::Ready {
        return Err(not_ready(file));
    }
    let dek = files.data_key(file).map_err(|e| key_missing(id, &e))?;
    let content = match thumbnail {
        None => servable.content.clone(),
        Some(name) => {
            let Some(t) = file.thumbnails.iter().find(|t| t.name == name) else {
                return Err(ApiError::not_found());
            };
            let stem = file
                .name
                .rsplit_once('.')
                .map_or(file.name.as_str(), |(s, _)| s);
            let ext = if t.kind == "png" { "png" } else { "jpg" };
            Arc::new(Content::new(
                thumb_key(id, name),
                t.size,
                &t.sha256,
                t.kind.clone(),
                format!("image/{}", t.kind),
                format!("{stem}_{name}.{ext}"),
                file.updated_at.into(),
            ))
        }
    };
    let served = Served {
        content,
        cache_control: header_value(policy.cache_control()),
        dek,
    };
    // A presigned URL is signed for GET: HEAD (and anything shown inline) is answered here.
    let redirected = match policy.presigned_downloads && parts.method == Method::GET {
        true => files.redirect(&served, &access.delivery).await?,
        false => None,
    };
    let response = match redirected {
        Some(r) => r,
        None => {
            files
                .serve(&parts.method, &parts.headers, &served, &access.delivery)
                .await?
        }
    };
    let delivered = response.status().is_success() || response.status() == StatusCode::FOUND;
    if parts.method == Method::GET && delivered {
        // Header values that pass `to_str` are visible ASCII: any byte is a char boundary.
        let range = parts
            .headers
            .get(header::RANGE)
            .and_then(|r| r.to_str().ok())
            .map(|r| &r[..r.len().min(100)]);
        let origin = crate::context::Origin {
            actor: Actor {
                id: access.actor,
                request_id: parts
                    .extensions
                    .get::<RequestId>()
                    .map(|r| r.as_str().to_owned()),
            },
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent,
        };
        let event = origin.into_event_with(
            "file.download",
            servable.audit_target.clone(),
            &Downloaded {
                via: access.via,
                thumbnail,
                range,
                status: response.status().as_u16(),
            },
        );
        files.audit.record(event).await;
    }
    Ok(response)
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
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    serve(&state, parts, params, id, None, client).await
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
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    serve(&state, parts, params, id, Some(&name), client).await
}
