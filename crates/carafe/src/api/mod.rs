//! The HTTP surface. Every route is in the one table below; cross-cutting conventions (request
//! ids, metrics and access logs, security headers — together in `envelope` — CORS,
//! compression, ETags, body limits, problem+json fallbacks) are layered once around all of
//! them.

pub mod audit;
pub mod auth;
pub mod client;
pub mod envelope;
pub mod error;
pub mod etag;
pub mod files;
pub mod idempotency;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod me;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod public_url;
pub mod query;
pub mod request_id;
mod security;
pub mod state;
pub mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get, head, options, post, put};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};

use self::files::direct;
use self::files::{buckets, content, records};
use self::files::{tus, tus_protocol};
use self::jobs::schedules;
use self::jobs::{enqueue, events as job_events, workers, workflows};
use crate::api::state::AppState;

/// Every route Carafe serves. Creating POSTs are wrapped in `idempotent`.
pub fn routes(state: &AppState) -> Vec<(&'static str, MethodRouter<AppState>)> {
    let idempotent = |m: MethodRouter<AppState>| {
        m.layer(from_fn_with_state(state.clone(), idempotency::middleware))
    };
    let idempotent_upload = |m: MethodRouter<AppState>| {
        m.layer(from_fn_with_state(
            state.clone(),
            idempotency::streaming_middleware,
        ))
    };
    vec![
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        ("/api/v1/openapi.json", get(ops::openapi)),
        ("/api/v1/me", get(me::me)),
        ("/api/v1/tokens", idempotent(post(tokens::create))),
        (
            "/api/v1/keys",
            idempotent(post(keys::create)).get(keys::list),
        ),
        ("/api/v1/keys/{id}", get(keys::get).delete(keys::revoke)),
        ("/api/v1/audit", get(audit::list)),
        (
            "/api/v1/jobs",
            idempotent(post(enqueue::enqueue)).get(enqueue::list),
        ),
        (
            "/api/v1/jobs/batch",
            idempotent(post(enqueue::enqueue_batch)),
        ),
        ("/api/v1/jobs/complete", post(workers::complete_batch)),
        ("/api/v1/jobs/{id}", get(enqueue::get)),
        ("/api/v1/jobs/{id}/events", get(job_events::stream)),
        ("/api/v1/jobs/{id}/cancel", post(enqueue::cancel)),
        ("/api/v1/jobs/{id}/retry", post(enqueue::retry)),
        ("/api/v1/jobs/{id}/heartbeat", post(workers::heartbeat)),
        ("/api/v1/jobs/{id}/progress", post(workers::progress)),
        ("/api/v1/jobs/{id}/complete", post(workers::complete)),
        ("/api/v1/jobs/{id}/fail", post(workers::fail)),
        ("/api/v1/queues", get(enqueue::queues)),
        ("/api/v1/queues/{queue}", put(enqueue::configure)),
        ("/api/v1/queues/{queue}/claim", post(workers::claim)),
        ("/api/v1/queues/{queue}/pause", post(enqueue::pause)),
        ("/api/v1/queues/{queue}/resume", post(enqueue::resume)),
        ("/api/v1/workflows", idempotent(post(workflows::create))),
        ("/api/v1/workflows/{id}", get(workflows::get)),
        ("/api/v1/buckets", get(buckets::list)),
        (
            "/api/v1/buckets/{name}",
            put(buckets::put).get(buckets::get),
        ),
        (
            "/api/v1/files",
            // Uploads stream to disk under the bucket's own limit, not the JSON body limit.
            idempotent_upload(post(records::upload).layer(DefaultBodyLimit::disable()))
                .get(records::list),
        ),
        (
            "/api/v1/files/{id}",
            get(records::get)
                .patch(records::update)
                .delete(records::delete),
        ),
        ("/api/v1/files/{id}/content", get(content::content)),
        (
            "/api/v1/files/{id}/thumbnails/{name}",
            get(content::thumbnail),
        ),
        ("/api/v1/files/{id}/links", post(records::create_link)),
        ("/api/v1/files/direct", post(direct::create)),
        (
            "/api/v1/files/direct/{id}",
            // The body streams to disk under the session's declared size.
            put(direct::put).layer(DefaultBodyLimit::disable()),
        ),
        ("/api/v1/files/{id}/complete", post(direct::complete)),
        (
            "/api/v1/uploads",
            // Creation with upload streams its body like a PATCH.
            options(tus::options)
                .merge(post(tus::create).layer(DefaultBodyLimit::disable()))
                .layer(from_fn(tus_protocol::middleware)),
        ),
        (
            "/api/v1/uploads/{id}",
            head(tus::head)
                .merge(axum::routing::patch(tus::patch).layer(DefaultBodyLimit::disable()))
                .delete(tus::terminate)
                .layer(from_fn(tus_protocol::middleware)),
        ),
        ("/api/v1/schedules", get(schedules::list)),
        (
            "/api/v1/schedules/{name}",
            put(schedules::put)
                .get(schedules::get)
                .delete(schedules::delete),
        ),
    ]
}

/// Routes that answer with file bytes skip the layers made for JSON (weak ETags, compression,
/// the JSON body limit): their answers carry strong ETags, are never compressed, and take no
/// body. Each layer costs every request a boxed future; downloads are the hottest path.
const BYTE_ROUTES: [&str; 2] = [
    "/api/v1/files/{id}/content",
    "/api/v1/files/{id}/thumbnails/{name}",
];

pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let mut router = Router::new();
    let mut byte_routes = Vec::new();
    for (path, handlers) in routes(&state) {
        if BYTE_ROUTES.contains(&path) {
            byte_routes.push((path, handlers));
        } else {
            router = router.route(path, handlers);
        }
    }
    let mut router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn(etag::middleware))
        .layer(DefaultBodyLimit::max(config.limits.json_body_bytes))
        // File content is never compressed: ranges and strong ETags name the stored bytes.
        .layer(
            CompressionLayer::new().compress_when(DefaultPredicate::new().and(
                |_: http::StatusCode,
                 _: http::Version,
                 h: &http::HeaderMap,
                 _: &http::Extensions| {
                    !h.contains_key(http::header::ACCEPT_RANGES)
                },
            )),
        );
    // A renamed route must be renamed here too, or it silently takes the JSON layers.
    debug_assert_eq!(
        byte_routes.len(),
        BYTE_ROUTES.len(),
        "BYTE_ROUTES not in routes()"
    );
    for (path, handlers) in byte_routes {
        router = router.route(path, handlers);
    }
    router
        .layer(tower::util::option_layer(security::cors(config)))
        .layer(from_fn_with_state(state.clone(), envelope::middleware))
        .with_state(state)
}
