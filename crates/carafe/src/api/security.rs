//! Browser-facing safety: security headers on every answer (API JSON must never be sniffed,
//! framed or rendered as a page) and CORS for the configured origins only.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use super::request_id::X_REQUEST_ID;
use crate::api::files::tus_protocol as tus;
use crate::config::Config;

/// Headers every answer carries unless its handler set its own (file downloads send their own
/// CSP; the dashboard will too).
const DEFAULTS: [(HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'; sandbox",
    ),
];

/// Adds the security headers a response lacks; HSTS too when Carafe is served over https.
pub fn add_headers(headers: &mut HeaderMap, https: bool) {
    for (name, value) in &DEFAULTS {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
    }
    if https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Whether Carafe's public URL is https (so browsers are told to stay on https).
pub fn https(config: &Config) -> bool {
    config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
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
