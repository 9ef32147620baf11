//! The OpenAPI document, generated from the handlers' annotations. Every route in the table in
//! `http/mod.rs` must appear here; a test holds the two equal.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{FieldError, Problem};
use super::files::direct;
use super::files::tus;
use super::files::{buckets, content, records};
use super::jobs::schedules;
use super::jobs::{enqueue, events as job_events, workers, workflows};
use super::{audit, keys, tokens};
use super::{me, ops};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Carafe",
        description = "Files, mail, notifications and background jobs for any web application. \
            Errors are RFC 9457 problem+json with a stable `code`."
    ),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        me::me,
        tokens::create,
        keys::create, keys::list, keys::get, keys::revoke,
        audit::list,
        enqueue::enqueue, enqueue::enqueue_batch, enqueue::get, enqueue::list, enqueue::cancel, enqueue::retry,
        job_events::stream,
        workers::claim, workers::heartbeat, workers::progress, workers::complete,
        workers::complete_batch, workers::fail,
        enqueue::queues, enqueue::configure, enqueue::pause, enqueue::resume,
        workflows::create, workflows::get,
        schedules::put, schedules::get, schedules::list, schedules::delete,
        buckets::put, buckets::get, buckets::list,
        records::upload, records::list, records::get, records::update, records::delete, records::create_link,
        content::content, content::thumbnail,
        direct::create, direct::put, direct::complete,
        tus::options, tus::create, tus::head, tus::patch, tus::terminate,
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
