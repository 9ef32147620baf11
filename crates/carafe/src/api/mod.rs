//! The HTTP surface. Every route is in the one table below; cross-cutting conventions (request
//! ids, metrics and access logs, security headers — together in `envelope` — CORS,
//! compression, ETags, body limits, problem+json fallbacks) are layered once around all of
//! them.

pub mod auth;
pub mod client;
pub mod envelope;
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
use axum::routing::{MethodRouter, get, head, options, post, put};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};

use crate::files::direct::http as direct;
use crate::files::tus::{http as tus, protocol as tus_protocol};
use crate::files::{buckets, content_http as content, http as files};
use crate::jobs::{events as job_events, http as jobs, worker_http as workers, workflows};
use crate::schedules::http as schedules;
use crate::state::AppState;
use crate::{audit, keys, tokens};

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
        (
            "/api/v1/jobs",
            idempotent(post(jobs::enqueue)).get(jobs::list),
        ),
        ("/api/v1/jobs/batch", idempotent(post(jobs::enqueue_batch))),
        ("/api/v1/jobs/complete", post(workers::complete_batch)),
        ("/api/v1/jobs/{id}", get(jobs::get)),
        ("/api/v1/jobs/{id}/events", get(job_events::stream)),
        ("/api/v1/jobs/{id}/cancel", post(jobs::cancel)),
        ("/api/v1/jobs/{id}/retry", post(jobs::retry)),
        ("/api/v1/jobs/{id}/heartbeat", post(workers::heartbeat)),
        ("/api/v1/jobs/{id}/progress", post(workers::progress)),
        ("/api/v1/jobs/{id}/complete", post(workers::complete)),
        ("/api/v1/jobs/{id}/fail", post(workers::fail)),
        ("/api/v1/queues", get(jobs::queues)),
        ("/api/v1/queues/{queue}", put(jobs::configure)),
        ("/api/v1/queues/{queue}/claim", post(workers::claim)),
        ("/api/v1/queues/{queue}/pause", post(jobs::pause)),
        ("/api/v1/queues/{queue}/resume", post(jobs::resume)),
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
            idempotent_upload(post(files::upload).layer(DefaultBodyLimit::disable()))
                .get(files::list),
        ),
        (
            "/api/v1/files/{id}",
            get(files::get).patch(files::update).delete(files::delete),
        ),
        ("/api/v1/files/{id}/content", get(content::content)),
        (
            "/api/v1/files/{id}/thumbnails/{name}",
            get(content::thumbnail),
        ),
        ("/api/v1/files/{id}/links", post(files::create_link)),
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
