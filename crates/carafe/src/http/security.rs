//! Browser-facing safety: security headers on every answer (API JSON must never be sniffed,
//! framed or rendered as a page) and CORS for the configured origins only.

use std::time::Duration;

use axum::Router;
use http::{HeaderName, HeaderValue, Method, header};
use tower::util::option_layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use super::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use super::request_id::X_REQUEST_ID;
use crate::config::Config;
use crate::files::tus::protocol as tus;
use crate::state::AppState;

/// Adds the security headers (unless a handler set its own: the dashboard will send its own
/// CSP) and CORS around `router`.
pub fn apply(router: Router<AppState>, config: &Config) -> Router<AppState> {
    let https = config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(option_layer(cors(config)))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; sandbox",
        ))
        .layer(option_layer(https.then(|| {
            set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000")
        })))
}

/// CORS for `cors_origins`; `None` (no CORS headers at all) when the list is empty.
pub fn cors(config: &Config) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(
                [
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_NONE_MATCH,
                    header::IF_MATCH,
                    IDEMPOTENCY_KEY.clone(),
                    X_REQUEST_ID.clone(),
                    HeaderName::from_static("last-event-id"),
                ]
                .into_iter()
                // Browser tus clients (tus-js-client, Uppy) send and read these.
                .chain(tus::REQUEST_HEADERS)
                .collect::<Vec<_>>(),
            )
            .expose_headers(
                [
                    header::LOCATION,
                    header::LINK,
                    header::ETAG,
                    header::RETRY_AFTER,
                    X_REQUEST_ID.clone(),
                    IDEMPOTENT_REPLAYED.clone(),
                ]
                .into_iter()
                .chain(tus::RESPONSE_HEADERS)
                .collect::<Vec<_>>(),
            )
            .max_age(Duration::from_secs(3600)),
    )
}
