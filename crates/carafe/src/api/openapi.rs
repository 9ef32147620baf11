//! The OpenAPI document's frame: title, security scheme, tags and the shared problem schemas.
//! Paths are added where each route is registered (`routes!` in each capability's api module),
//! so a route is written once, with its documentation.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Carafe",
        description = "Files, mail, notifications and background jobs for any web application. \
            Errors are RFC 9457 problem+json with a stable `code`."
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "auth", description = "Who is calling; end-user tokens"),
        (name = "keys", description = "Server API keys (admin)"),
        (name = "audit", description = "The append-only audit log: admin, or one file's events with the `files` scope; JSON or streamed CSV"),
        (name = "jobs", description = "Enqueue, inspect, watch, cancel and retry jobs; queues"),
        (name = "files", description = "Buckets, uploads, processing, downloads with ranges, signed links"),
        (name = "uploads", description = "Resumable uploads (tus 1.0: creation, creation-with-upload, termination, expiration, checksum); finished uploads become files"),
        (name = "schedules", description = "Recurring jobs: cron in a time zone, one leader fires each tick once"),
        (name = "workers", description = "The pull-worker protocol: claim, heartbeat, progress, complete, fail"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`ck_…`) or an end-user token from POST /api/v1/tokens",
                    ))
                    .build(),
            ),
        );
    }
}
