//! The OpenAPI document, generated from the handlers' annotations. Every route in the table in
//! `http/mod.rs` must appear here; a test holds the two equal.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{FieldError, Problem};
use super::{me, ops};
use crate::files::direct::http as direct;
use crate::files::tus::http as tus;
use crate::files::{buckets, content_http as content, http as files};
use crate::jobs::{events as job_events, http as jobs, worker_http as workers, workflows};
use crate::schedules::http as schedules;
use crate::{audit, keys, tokens};

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
        tokens::http::create,
        keys::http::create, keys::http::list, keys::http::get, keys::http::revoke,
        audit::http::list,
        jobs::enqueue, jobs::enqueue_batch, jobs::get, jobs::list, jobs::cancel, jobs::retry,
        job_events::stream,
        workers::claim, workers::heartbeat, workers::progress, workers::complete,
        workers::complete_batch, workers::fail,
        jobs::queues, jobs::configure, jobs::pause, jobs::resume,
        workflows::create, workflows::get,
        schedules::put, schedules::get, schedules::list, schedules::delete,
        buckets::put, buckets::get, buckets::list,
        files::upload, files::list, files::get, files::update, files::delete, files::create_link,
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
