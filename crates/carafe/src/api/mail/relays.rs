//! HTTP handler for the relays mail goes out through (`mail` scope): each one's transport,
//! queue, limits and where they stand now (slowed by throttling, this hour's and day's sends).
//! No URLs or credentials are shown.

use axum::extract::State;
use carafe_core::keys::Scope;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ApiResult, Problem};

use crate::api::state::AppState;
use crate::context::Principal;
use crate::mail::relays::RelayStatus;

#[derive(Debug, Serialize, ToSchema)]
pub struct RelayView {
    /// `default` (`mail.smtp_url`) or a name under `mail.relays`.
    pub name: String,
    /// `smtp`, or `outbox` (no relay: captured).
    pub transport: String,
    /// The queue its transactional messages are sent from.
    pub queue: String,
    /// The rate set (messages per second, every instance together); null: no limit.
    pub rate_per_second: Option<f64>,
    /// The rate it may go at now: lower than the rate set for a while after throttling.
    pub current_rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub hourly_limit: Option<u64>,
    pub daily_limit: Option<u64>,
    /// Messages sent this calendar hour and day (UTC), counted when claimed for sending.
    pub sent_this_hour: Option<u64>,
    pub sent_today: Option<u64>,
    /// When a throttling reply last slowed it down.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub slowed_at: Option<OffsetDateTime>,
}

impl From<RelayStatus> for RelayView {
    fn from(r: RelayStatus) -> Self {
        let l = r.limits.as_ref();
        RelayView {
            name: r.name,
            transport: r.transport.into(),
            queue: r.queue,
            rate_per_second: l.map(|l| l.group.rate_per_second),
            current_rate_per_second: l.map(|l| l.current_rate(l.tokens_at)),
            burst: l.map(|l| l.group.burst),
            hourly_limit: l.and_then(|l| l.group.hourly),
            daily_limit: l.and_then(|l| l.group.daily),
            sent_this_hour: l.map(|l| l.hour_count),
            sent_today: l.map(|l| l.day_count),
            slowed_at: l.and_then(|l| l.slowed_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RelayList {
    pub items: Vec<RelayView>,
}

/// The relays mail goes out through, with their limits and where they stand.
#[utoipa::path(get, path = "/api/v1/mail/relays", tag = "mail",
    responses((status = 200, body = RelayList), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<RelayList>> {
    principal.require_key(Scope::Mail)?;
    let items = state.mail.relay_statuses().await?;
    Ok(axum::Json(RelayList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}
