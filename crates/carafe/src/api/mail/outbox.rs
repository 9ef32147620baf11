//! HTTP handlers for the outbox (`mail` scope): with no relay configured every message is
//! captured here, searchable, readable as a mail client shows it and as raw `message/rfc822`,
//! and clearable — a built-in mail catcher for development and tests.

use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carafe_core::keys::Scope;
use carafe_core::mail::{OutboxFilter, OutboxId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::{OutboxDetail, OutboxItemView, OutboxPartView};
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};

/// Longest long-poll of `GET /api/v1/outbox?wait=…`, in seconds.
const MAX_WAIT_S: u64 = 30;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxParams {
    /// The recipient's address (case-insensitive).
    pub to: Option<String>,
    /// Part of the subject (case-insensitive).
    pub subject: Option<String>,
    pub tag: Option<String>,
    /// The `Message-ID` (without angle brackets).
    pub message_id: Option<String>,
    /// When nothing matches yet, wait up to this many seconds (at most 30) for a match.
    pub wait: Option<u64>,
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Captured messages, newest first.
#[utoipa::path(get, path = "/api/v1/outbox", tag = "mail", params(OutboxParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<OutboxItemView>)),
              (status = 422, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<OutboxParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page_request()?;
    let wait = params.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::invalid(
            "wait",
            format!("at most {MAX_WAIT_S} seconds"),
        ));
    }
    let filter = OutboxFilter {
        to: params.to,
        subject: params.subject,
        tag: params.tag,
        message_id: params.message_id,
    };
    let found = state
        .mail
        .outbox_wait(&filter, &page, Duration::from_secs(wait))
        .await?;
    Ok(pagination::respond(
        found,
        OutboxItemView::from,
        &base,
        &uri,
    ))
}

/// One captured message: its headers, text and HTML.
#[utoipa::path(get, path = "/api/v1/outbox/{id}", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, body = OutboxDetail), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<OutboxId>,
) -> ApiResult<axum::Json<OutboxDetail>> {
    principal.require_key(Scope::Mail)?;
    let entry = state.mail.outbox_entry(id).await?;
    let parsed = crate::mail::read::parse(&entry.raw);
    Ok(axum::Json(OutboxDetail {
        item: entry.item.into(),
        headers: parsed.headers,
        text: parsed.text,
        html: parsed.html,
        attachments: parsed
            .attachments
            .into_iter()
            .map(|a| OutboxPartView {
                filename: a.filename,
                content_type: a.content_type,
                size: a.size,
                cid: a.cid,
            })
            .collect(),
    }))
}

/// One captured message exactly as a relay would have received it.
#[utoipa::path(get, path = "/api/v1/outbox/{id}/raw", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, content_type = "message/rfc822", body = String),
              (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn raw(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<OutboxId>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let entry = state.mail.outbox_entry(id).await?;
    let name = format!("attachment; filename=\"{id}.eml\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/rfc822"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&name).map_err(|e| ApiError::internal(&e))?,
            ),
        ],
        entry.raw,
    )
        .into_response())
}

/// Delete one captured message.
#[utoipa::path(delete, path = "/api/v1/outbox/{id}", tag = "mail", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<OutboxId>,
) -> ApiResult<StatusCode> {
    principal.require_key(Scope::Mail)?;
    state.mail.clear_outbox(Some(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    /// How many captured messages were deleted.
    pub deleted: u64,
}

/// Delete every captured message (the send log stays).
#[utoipa::path(delete, path = "/api/v1/outbox", tag = "mail",
    responses((status = 200, body = Cleared)),
    security(("bearer" = ["mail"])))]
pub async fn clear(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Cleared>> {
    principal.require_key(Scope::Mail)?;
    let deleted = state.mail.clear_outbox(None).await?;
    Ok(axum::Json(Cleared { deleted }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, clear))
        .routes(routes!(get, delete))
        .routes(routes!(raw))
}
