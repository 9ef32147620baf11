//! HTTP handlers for mail (`mail` scope): send (one message per recipient, queued for
//! sending), read a mail and its messages, list messages with filters, read one message's
//! timeline, cancel what is not sent yet; the outbox (`outbox.rs`), suppressions
//! (`suppressions.rs`), templates (`templates.rs`) and providers' webhooks (`webhooks.rs`).

mod campaigns;
mod outbox;
mod relays;
mod suppressions;
mod templates;
mod unsubscribe;
mod views;
mod webhooks;

use std::collections::BTreeMap;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use carafe_core::keys::Scope;
use carafe_core::mail::{MailId, MessageFilter, MessageId, MessageStatus};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::Layers;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::mail::{AttachmentSpec, SendRequest};

pub use templates::UseTemplate;
pub use views::{MailView, MessageDetail, MessageView};

/// One address or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Addresses {
    fn list(a: Option<Addresses>) -> Vec<String> {
        match a {
            None => Vec::new(),
            Some(Addresses::One(s)) => vec![s],
            Some(Addresses::Many(v)) => v,
        }
    }
}

/// An attachment or inline part: `{file_id, filename?}` or `{filename, content_base64, type}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentBody {
    /// A Carafe file (its name and type are used unless given).
    pub file_id: Option<String>,
    pub filename: Option<String>,
    /// The bytes, base64 (standard alphabet; whitespace ignored).
    pub content_base64: Option<String>,
    /// Media type, e.g. `application/pdf` (default `application/octet-stream`).
    #[serde(rename = "type")]
    pub content_type: Option<String>,
    /// Content-ID (required for inline parts).
    pub cid: Option<String>,
}

impl AttachmentBody {
    fn specs(list: Option<Vec<AttachmentBody>>) -> Vec<AttachmentSpec> {
        list.unwrap_or_default()
            .into_iter()
            .map(|a| AttachmentSpec {
                file_id: a.file_id,
                filename: a.filename,
                content_base64: a.content_base64,
                content: None,
                content_type: a.content_type,
                cid: a.cid,
            })
            .collect()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// `Name <address>` or an address; unset: the configured `mail.from`.
    pub from: Option<String>,
    pub reply_to: Option<String>,
    /// One address or a list; to, cc and bcc together hold 1–50 recipients. Each recipient
    /// gets its own message (and send log); bcc recipients never appear in headers.
    pub to: Option<Addresses>,
    pub cc: Option<Addresses>,
    pub bcc: Option<Addresses>,
    pub subject: Option<String>,
    /// The plain-text body; derived from `html` when absent.
    pub text: Option<String>,
    pub html: Option<String>,
    /// Render `subject`, `text` and `html` from a stored template instead of giving them.
    pub template: Option<UseTemplate>,
    /// Files to attach: Carafe files (`ready`, readable by the key, which then needs the
    /// `files` scope too) or bytes in base64; at most 20 with `inline`, and
    /// `mail.max_attachment_bytes` (10 MiB) together.
    pub attachments: Option<Vec<AttachmentBody>>,
    /// Parts the HTML shows by `cid:` (`<img src="cid:logo">`), in the same two forms.
    pub inline: Option<Vec<AttachmentBody>>,
    /// Extra headers: `X-…` and `List-Unsubscribe`, `List-Unsubscribe-Post`, `List-Id`,
    /// `In-Reply-To`, `References`, `Auto-Submitted`, `Precedence`.
    pub headers: Option<BTreeMap<String, String>>,
    /// Up to 10 labels to find the messages by (`a-z A-Z 0-9 . _ : -`).
    pub tags: Option<Vec<String>>,
    /// Add one-click unsubscribe (RFC 8058) to each recipient's copy: `List-Unsubscribe` with
    /// a link to `/u/{token}` on the public URL and `List-Unsubscribe-Post`. A POST to the
    /// link suppresses the address.
    pub unsubscribe: Option<bool>,
    /// The relay to send through (`GET /api/v1/mail/relays`); default `default`.
    pub relay: Option<String>,
    /// Send later (RFC 3339), up to `mail.max_schedule` ahead.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
}

/// Send a mail: accepted at once (202), each recipient's message queued for sending.
#[utoipa::path(post, path = "/api/v1/mail", tag = "mail", request_body = SendBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the answer for 24 h")),
    responses((status = 202, body = MailView, headers(("Location" = String))),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn send(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    base: BaseUrl,
    Json(body): Json<SendBody>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let req = SendRequest {
        from: body.from,
        reply_to: body.reply_to,
        to: Addresses::list(body.to),
        cc: Addresses::list(body.cc),
        bcc: Addresses::list(body.bcc),
        subject: body.subject,
        text: body.text,
        html: body.html,
        template: body.template.map(UseTemplate::into_use),
        attachments: AttachmentBody::specs(body.attachments),
        inline: AttachmentBody::specs(body.inline),
        headers: body.headers.unwrap_or_default().into_iter().collect(),
        tags: body.tags.unwrap_or_default(),
        send_at: body.send_at,
        unsubscribe: body.unsubscribe.unwrap_or(false),
        relay: body.relay,
        ..Default::default()
    };
    let sent = state.mail.send(req, &actor, &principal).await?;
    let location = base.join(&format!("/api/v1/mail/{}", sent.mail.id));
    crate::api::json::located(StatusCode::ACCEPTED, &location, MailView::from(sent))
}

/// A mail with its recipients' messages.
#[utoipa::path(get, path = "/api/v1/mail/{id}", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, body = MailView), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MailId>,
) -> ApiResult<axum::Json<MailView>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(state.mail.get(id).await?.into()))
}

/// Cancel what is not sent yet (queued and deferred messages); a message being sent finishes.
#[utoipa::path(post, path = "/api/v1/mail/{id}/cancel", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, body = MailView), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MailId>,
) -> ApiResult<axum::Json<MailView>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(state.mail.cancel(id).await?.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageListParams {
    /// queued, sending, sent, deferred, failed, suppressed, bounced, complained or cancelled.
    pub status: Option<String>,
    /// A recipient's address (case-insensitive).
    pub to: Option<String>,
    pub tag: Option<String>,
    /// Only this mail's messages.
    pub mail: Option<String>,
    /// Only this campaign's messages.
    pub campaign: Option<String>,
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Messages (one per recipient), newest first.
#[utoipa::path(get, path = "/api/v1/mail", tag = "mail", params(MessageListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<MessageView>)),
              (status = 422, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<MessageListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    }
    .page_request()?;
    let filter = MessageFilter {
        status: match &params.status {
            Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
                ApiError::invalid("status", "not a message status (see the documentation)")
            })?),
            None => None,
        },
        to: params.to.clone(),
        tag: params.tag.clone(),
        mail: match &params.mail {
            Some(m) => Some(
                m.parse()
                    .map_err(|_| ApiError::invalid("mail", "not a mail id"))?,
            ),
            None => None,
        },
        campaign: match &params.campaign {
            Some(c) => Some(
                c.parse()
                    .map_err(|_| ApiError::invalid("campaign", "not a campaign id"))?,
            ),
            None => None,
        },
    };
    let found = state.mail.list(&filter, &page).await?;
    Ok(pagination::respond(found, MessageView::from, &base, &uri))
}

/// One recipient's message with its timeline.
#[utoipa::path(get, path = "/api/v1/mail/messages/{id}", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, body = MessageDetail), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MessageId>,
) -> ApiResult<axum::Json<MessageDetail>> {
    principal.require_key(Scope::Mail)?;
    let (message, events) = state.mail.message(id).await?;
    Ok(axum::Json(MessageDetail {
        message: message.into(),
        events: events.into_iter().map(Into::into).collect(),
    }))
}

/// The largest send request: base64 attachments up to `mail.max_attachment_bytes` (4/3 of it)
/// beside bodies of up to 2 MiB each.
fn send_body_limit(layers: &Layers) -> usize {
    let attachments = layers.state().mail.settings().max_attachment_bytes as usize;
    attachments / 3 * 4 + 8 * 1024 * 1024
}

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(layers.idempotent_large(routes!(send), send_body_limit(layers)))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(message))
        .merge(campaigns::routes(layers))
        .merge(outbox::routes())
        .merge(relays::routes())
        .merge(suppressions::routes())
        .merge(templates::routes())
        .merge(unsubscribe::routes())
        .merge(webhooks::routes())
}
