//! The HTTP surface. Each capability's module (`jobs`, `files`, `keys`, `tokens`, `audit`) and
//! `ops`/`me` register their routes once, with their OpenAPI documentation (`routes!`), in one
//! `routes` function; this module gathers them, and layers the cross-cutting conventions
//! (request ids, metrics and access logs, security headers — together in `envelope` — CORS,
//! compression, ETags, body limits, problem+json fallbacks) once around all of them.

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
pub mod mail;
pub mod me;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod public_url;
pub mod query;
pub mod request_id;
mod security;
pub mod sse;
pub mod state;
pub mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};

use self::state::AppState;

/// What a capability's routes are wrapped in, where one needs it.
pub struct Layers {
    state: AppState,
}

impl Layers {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A creating POST that takes an `Idempotency-Key` (other methods pass through).
    pub fn idempotent(&self, route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
        route.layer(from_fn_with_state(
            self.state.clone(),
            idempotency::middleware,
        ))
    }

    /// `idempotent`, for a JSON route whose bodies may be larger than
    /// `limits.json_body_bytes` (up to `limit` bytes; mail with attachments).
    pub fn idempotent_large(
        &self,
        route: UtoipaMethodRouter<AppState>,
        limit: usize,
    ) -> UtoipaMethodRouter<AppState> {
        let limit = limit.max(self.state.config.limits.json_body_bytes);
        self.idempotent(route)
            .layer::<_, std::convert::Infallible>(axum::Extension(idempotency::BodyLimit(limit)))
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit))
    }

    /// The same for uploads, whose bodies stream: the key covers the headers, not the bytes.
    pub fn idempotent_upload(
        &self,
        route: UtoipaMethodRouter<AppState>,
    ) -> UtoipaMethodRouter<AppState> {
        route.layer(from_fn_with_state(
            self.state.clone(),
            idempotency::streaming_middleware,
        ))
    }
}

/// Every route Carafe serves, with its documentation: the JSON API, and apart from it the
/// routes that answer with file bytes. Those skip the layers made for JSON (weak ETags,
/// compression, the JSON body limit): their answers carry strong ETags, are never compressed,
/// and take no body — and each layer costs every request a boxed future, on the hottest path.
pub struct Routes {
    pub json: OpenApiRouter<AppState>,
    pub bytes: OpenApiRouter<AppState>,
}

pub fn routes(state: &AppState) -> Routes {
    let layers = Layers {
        state: state.clone(),
    };
    let json = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::routes())
        .merge(me::routes())
        .merge(keys::routes(&layers))
        .merge(tokens::routes(&layers))
        .merge(audit::routes())
        .merge(jobs::routes(&layers))
        .merge(files::routes(&layers))
        .merge(mail::routes(&layers));
    Routes {
        json,
        bytes: files::byte_routes(),
    }
}

impl Routes {
    /// The OpenAPI document of every route.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut doc = self.json.get_openapi().clone();
        doc.merge(self.bytes.get_openapi().clone());
        doc
    }
}

pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let routes = routes(&state);
    let doc = ops::OpenApiJson::new(&routes.openapi());
    let (json, _) = routes.json.split_for_parts();
    let (bytes, _) = routes.bytes.split_for_parts();
    json.fallback(error::not_found)
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
        )
        .merge(bytes)
        .layer(axum::Extension(doc))
        .layer(tower::util::option_layer(security::cors(config)))
        .layer(from_fn_with_state(state.clone(), envelope::middleware))
        .with_state(state)
}
