//! Files over HTTP: buckets, uploads (forms and raw bodies, resumable tus, direct to storage),
//! records, and the bytes with their ranges and validators. Handlers parse, call the `files`
//! capability and map its answers.

pub mod buckets;
pub mod caller;
pub mod content;
pub mod direct;
pub mod form;
pub mod records;
pub mod tus;
pub mod tus_protocol;
pub mod uploads;
pub mod views;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::api::Layers;
use crate::api::state::AppState;

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    // Bodies of uploads stream to disk under the bucket's own limit (or the direct upload's
    // declared size), not the JSON body limit.
    let streamed = DefaultBodyLimit::disable;
    OpenApiRouter::new()
        .routes(routes!(buckets::list))
        .routes(routes!(buckets::put, buckets::get))
        .routes(layers.idempotent_upload(routes!(uploads::upload).layer(streamed())))
        .routes(routes!(records::list))
        .routes(routes!(records::get, records::update, records::delete))
        .routes(routes!(records::create_link))
        .routes(routes!(direct::create))
        .routes(routes!(direct::put).layer(streamed()))
        .routes(routes!(direct::complete))
        // Creation with upload streams its body like a PATCH.
        .routes(routes!(tus::options).layer(from_fn(tus_protocol::middleware)))
        .routes(
            routes!(tus::create)
                .layer(streamed())
                .layer(from_fn(tus_protocol::middleware)),
        )
        .routes(routes!(tus::head, tus::terminate).layer(from_fn(tus_protocol::middleware)))
        .routes(
            routes!(tus::patch)
                .layer(streamed())
                .layer(from_fn(tus_protocol::middleware)),
        )
}

/// The routes that answer with file bytes (see `api::Routes`).
pub fn byte_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(content::content))
        .routes(routes!(content::thumbnail))
}
