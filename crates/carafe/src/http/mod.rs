//! The HTTP surface. Every route is in the one table below; cross-cutting conventions (request
//! ids, metrics and access logs, security headers, CORS, compression, ETags, body limits,
//! problem+json fallbacks) are layered once around all of them.

pub mod auth;
pub mod error;
pub mod etag;
pub mod idempotency;
pub mod json;
pub mod me;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod public_url;
pub mod query;
pub mod request_id;
mod security;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get, post};
use tower_http::compression::CompressionLayer;

use crate::state::AppState;
use crate::{audit, keys, tokens};

/// Every route Carafe serves. Creating POSTs are wrapped in `idempotent`.
pub fn routes(state: &AppState) -> Vec<(&'static str, MethodRouter<AppState>)> {
    let idempotent = |m: MethodRouter<AppState>| {
        m.layer(from_fn_with_state(state.clone(), idempotency::middleware))
    };
    vec![
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        ("/api/v1/openapi.json", get(ops::openapi)),
        ("/api/v1/me", get(me::me)),
        ("/api/v1/tokens", idempotent(post(tokens::http::create))),
        (
            "/api/v1/keys",
            idempotent(post(keys::http::create)).get(keys::http::list),
        ),
        (
            "/api/v1/keys/{id}",
            get(keys::http::get).delete(keys::http::revoke),
        ),
        ("/api/v1/audit", get(audit::http::list)),
    ]
}

pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let mut router = Router::new();
    for (path, handlers) in routes(&state) {
        router = router.route(path, handlers);
    }
    let router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn(etag::middleware))
        .layer(DefaultBodyLimit::max(config.limits.json_body_bytes))
        .layer(CompressionLayer::new());
    security::apply(router, config)
        .layer(from_fn_with_state(state.clone(), observe::middleware))
        .layer(from_fn(request_id::middleware))
        .with_state(state)
}
