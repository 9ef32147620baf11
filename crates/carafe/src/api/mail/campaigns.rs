//! HTTP handlers for campaigns (`mail` scope): create one (recipients inline or a CSV/XLSX
//! file), read and list them with their counts, start, pause, resume, cancel, resend the
//! failed messages, and watch the progress as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::response::sse::Event;
use carafe_core::campaigns::{BadRow, Campaign, CampaignId};
use carafe_core::keys::Scope;
use carafe_core::mail::MessageStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::UseTemplate;
use crate::api::Layers;
use crate::api::auth::StreamPrincipal;
use crate::api::error::{ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::mail::campaigns::{CampaignRequest, CampaignView, RecipientSpec};

/// One recipient: an address and what their copy's template sees.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    pub email: String,
    /// A JSON object, over the template's `data`.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

/// A new campaign: recipients inline, or `file_id` of a CSV or XLSX file.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub name: String,
    /// The template; its `data` is what every recipient's copy sees (theirs over it).
    pub template: UseTemplate,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Up to 10,000 recipients (a file takes more).
    pub recipients: Option<Vec<RecipientBody>>,
    /// A ready Carafe file: CSV (UTF-8) or XLSX whose first row names the columns, one of
    /// them `email`; the other columns become each recipient's data.
    pub file_id: Option<String>,
    /// Send no earlier than this (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
    /// At most this many messages per second, on all instances together (the relay's own
    /// rate, shared with everything else sent through it, applies too).
    pub rate: Option<f64>,
    /// The relay to send through (`GET /api/v1/mail/relays`); default `default`.
    pub relay: Option<String>,
    /// Start at once (with a file: as soon as it is imported). Default false.
    pub start: Option<bool>,
}

/// A campaign's messages by status.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignCountsView {
    /// Recipients stored.
    pub total: u64,
    /// Messages made so far (one per recipient).
    pub messages: u64,
    pub queued: u64,
    pub sending: u64,
    pub sent: u64,
    pub deferred: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub bounced: u64,
    pub complained: u64,
    pub cancelled: u64,
    /// Recipients who unsubscribed through this campaign's links.
    pub unsubscribed: u64,
}

/// What reading the recipients found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportView {
    /// Data rows read.
    pub rows: u64,
    pub bad_rows: u64,
    /// The first 1,000 bad rows: `{row, error}` (the header is row 1).
    #[schema(value_type = Vec<Object>)]
    pub bad: Vec<BadRow>,
    /// Why the import failed as a whole, when it did.
    pub error: Option<String>,
}

/// A campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignResource {
    pub id: String,
    pub name: String,
    /// importing, ready, sending, paused, completed, cancelled or failed.
    pub state: String,
    pub template: String,
    /// Pinned when the campaign starts.
    pub template_version: Option<u32>,
    pub locale: Option<String>,
    pub from: String,
    pub reply_to: Option<String>,
    pub tags: Vec<String>,
    pub rate: Option<f64>,
    /// The relay its messages go out through.
    pub relay: String,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub send_at: Option<OffsetDateTime>,
    pub file_id: Option<String>,
    /// The queue its messages are sent from.
    pub queue: String,
    /// Absent in listings.
    pub counts: Option<CampaignCountsView>,
    pub import: ImportView,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
}

fn view(c: Campaign, counts: Option<CampaignCountsView>, state: &str) -> CampaignResource {
    CampaignResource {
        id: c.id.to_string(),
        name: c.name,
        state: state.into(),
        template: c.template,
        template_version: c.template_version,
        locale: c.locale,
        from: c.from,
        reply_to: c.reply_to,
        tags: c.tags,
        rate: c.rate,
        relay: c
            .relay
            .unwrap_or_else(|| crate::mail::relays::DEFAULT.into()),
        send_at: c.send_at,
        file_id: c.source.map(|f| f.to_string()),
        queue: crate::mail::campaign_queue(c.id),
        counts,
        import: ImportView {
            rows: c.import.rows,
            bad_rows: c.import.bad_rows,
            bad: c.import.bad,
            error: c.import.error,
        },
        created_at: c.created_at,
        started_at: c.started_at,
    }
}

impl From<CampaignView> for CampaignResource {
    fn from(v: CampaignView) -> Self {
        let state = v.state();
        let n = |s| v.counts.status(s);
        let counts = CampaignCountsView {
            total: v.campaign.recipients,
            messages: v.counts.messages(),
            queued: n(MessageStatus::Queued),
            sending: n(MessageStatus::Sending),
            sent: n(MessageStatus::Sent),
            deferred: n(MessageStatus::Deferred),
            failed: n(MessageStatus::Failed),
            suppressed: n(MessageStatus::Suppressed),
            bounced: n(MessageStatus::Bounced),
            complained: n(MessageStatus::Complained),
            cancelled: n(MessageStatus::Cancelled),
            unsubscribed: v.counts.unsubscribed,
        };
        view(v.campaign, Some(counts), state)
    }
}

/// Create a campaign (`201`). With `start: true` it starts at once (after its import).
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "mail", request_body = CampaignBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the answer for 24 h")),
    responses((status = 201, body = CampaignResource, headers(("Location" = String))),
              (status = 422, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    base: BaseUrl,
    Json(body): Json<CampaignBody>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let req = CampaignRequest {
        name: body.name,
        template: body.template.into_use(),
        from: body.from,
        reply_to: body.reply_to,
        tags: body.tags.unwrap_or_default(),
        recipients: body.recipients.map(|list| {
            list.into_iter()
                .map(|r| RecipientSpec {
                    email: r.email,
                    data: r.data,
                })
                .collect()
        }),
        file_id: body.file_id,
        send_at: body.send_at,
        rate: body.rate,
        relay: body.relay,
        start: body.start.unwrap_or(false),
    };
    let made = state.mail.create_campaign(req, &actor, &principal).await?;
    let location = base.join(&format!("/api/v1/campaigns/{}", made.campaign.id));
    crate::api::json::located(StatusCode::CREATED, &location, CampaignResource::from(made))
}

/// Campaigns, newest first (without counts).
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "mail", params(ListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<CampaignResource>))),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = params.page_request()?;
    let found = state.mail.campaigns(&page).await?;
    Ok(pagination::respond(
        found,
        |c| {
            let s = c.state.as_str();
            view(c, None, s)
        },
        &base,
        &uri,
    ))
}

/// A campaign with its counts.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "mail", params(("id" = String, Path)),
    responses((status = 200, body = CampaignResource), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<CampaignId>,
) -> ApiResult<axum::Json<CampaignResource>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(state.mail.campaign(id).await?.into()))
}

macro_rules! action {
    ($name:ident, $path:literal, $method:ident, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "mail", params(("id" = String, Path)),
            responses((status = 200, body = CampaignResource), (status = 404, body = Problem),
                      (status = 409, description = "the campaign's state does not allow it", body = Problem)),
            security(("bearer" = ["mail"])))]
        pub async fn $name(
            State(state): State<AppState>,
            principal: Principal,
            Path(id): Path<CampaignId>,
        ) -> ApiResult<axum::Json<CampaignResource>> {
            principal.require_key(Scope::Mail)?;
            Ok(axum::Json(state.mail.$method(id).await?.into()))
        }
    };
}

action!(
    start,
    "/api/v1/campaigns/{id}/start",
    start_campaign,
    "Start a ready campaign: its template version is pinned and its messages are made and sent."
);
action!(
    pause,
    "/api/v1/campaigns/{id}/pause",
    pause_campaign,
    "Pause a sending campaign on every instance (a message already being sent completes)."
);
action!(
    resume,
    "/api/v1/campaigns/{id}/resume",
    resume_campaign,
    "Resume a paused campaign."
);
action!(
    cancel,
    "/api/v1/campaigns/{id}/cancel",
    cancel_campaign,
    "Cancel a campaign: what has not been sent never will be."
);

/// The campaign and how many failed messages were queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resent {
    pub requeued: u64,
    pub campaign: CampaignResource,
}

/// Send the campaign's failed messages again.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/resend-failed", tag = "mail",
    params(("id" = String, Path)),
    responses((status = 200, body = Resent), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn resend_failed(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<CampaignId>,
) -> ApiResult<axum::Json<Resent>> {
    principal.require_key(Scope::Mail)?;
    let (campaign, requeued) = state.mail.resend_failed(id).await?;
    Ok(axum::Json(Resent {
        requeued,
        campaign: campaign.into(),
    }))
}

/// How often a progress stream reads the campaign when nothing on this instance wakes it.
const POLL: Duration = Duration::from_secs(1);

/// How often, at most, a campaign's watchers get a progress event.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Watch a campaign: a `progress` event (the campaign with its counts) whenever it changes
/// (at most four a second), then a last one when it is completed, cancelled or failed, and the stream ends. Each
/// event is whole, so a client that reconnects just takes the next.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/events", tag = "mail",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String),
              (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn events(
    State(state): State<AppState>,
    StreamPrincipal(principal): StreamPrincipal,
    Path(id): Path<CampaignId>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    state.mail.campaign(id).await?;
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (state, None::<String>, 0u64, false),
        move |(state, last, seq, done)| {
            let shutdown = shutdown.clone();
            async move {
                if done {
                    return None;
                }
                if seq > 0 {
                    // At most a few events a second: a campaign sending thousands of messages
                    // a second is not recounted for each.
                    tokio::select! {
                        () = tokio::time::sleep(PROGRESS_EVERY) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
                loop {
                    let current = match state.mail.campaign(id).await {
                        Ok(v) => CampaignResource::from(v),
                        Err(_) => return None,
                    };
                    let ended =
                        ["completed", "cancelled", "failed"].contains(&current.state.as_str());
                    let json = serde_json::to_string(&current).unwrap_or_default();
                    if last.as_deref() != Some(json.as_str()) {
                        let event = Event::default()
                            .id((seq + 1).to_string())
                            .event("progress")
                            .data(json.clone());
                        return Some((
                            Ok::<_, Infallible>(event),
                            (state, Some(json), seq + 1, ended),
                        ));
                    }
                    if ended {
                        return None;
                    }
                    tokio::select! {
                        () = state.mail.campaign_wait(id, POLL) => {}
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
        },
    );
    Ok(crate::api::sse::respond(stream))
}

/// The largest create request: 10,000 inline recipients with their data.
const CREATE_BODY_LIMIT: usize = 16 * 1024 * 1024;

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(layers.idempotent_large(routes!(create), CREATE_BODY_LIMIT))
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(start))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(cancel))
        .routes(routes!(resend_failed))
        .routes(routes!(events))
}
