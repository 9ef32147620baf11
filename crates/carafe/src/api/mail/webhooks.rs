//! `POST /api/v1/webhooks/mail/{provider}`: what mail providers report after sending —
//! bounces, complaints, deliveries, unsubscribes — from Amazon SES (through SNS), SendGrid,
//! Postmark and Mailgun, each checked as that provider signs it, and the app's own reports
//! (`generic`, with a `mail` API key). The handler hands the raw body over: signatures cover
//! its exact bytes.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use carafe_core::keys::Scope;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::json::RawBody;
use crate::api::query::Path;
use crate::api::state::AppState;
use crate::context::Principal;
use crate::mail::feedback::{Provider, Summary};

/// The largest webhook body (SendGrid posts events in batches).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Take a provider's report of bounces, complaints, deliveries or unsubscribes. `ses`,
/// `sendgrid`, `postmark` and `mailgun` are checked with what `[mail.webhooks]` configures
/// (an unconfigured provider is refused); `generic` takes `{"events": [{type, recipient,
/// message | relay_id | message_id, event_id?, at?, reason?}]}` with a `mail` API key. A hard
/// bounce or a complaint marks the sent message and suppresses the address; an unsubscribe
/// suppresses it; a report delivered twice counts once.
#[utoipa::path(post, path = "/api/v1/webhooks/mail/{provider}", tag = "mail",
    params(("provider" = String, Path, description = "ses, sendgrid, postmark, mailgun or generic")),
    request_body(content = String, content_type = "application/json",
        description = "the provider's own payload; for `generic`, events as described"),
    responses((status = 200, body = Summary),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem)),
    security((), ("bearer" = ["mail"])))]
pub async fn take(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    principal: Result<Principal, ApiError>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<Summary>> {
    let provider = Provider::parse(&provider).ok_or_else(ApiError::not_found)?;
    if provider == Provider::Generic {
        principal?.require_key(Scope::Mail)?;
    }
    Ok(axum::Json(
        state.mail.take_webhook(provider, &headers, &body).await?,
    ))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(take).layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(MAX_BODY)))
}
