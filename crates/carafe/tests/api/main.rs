//! Integration tests: each test starts a real Carafe server on port 0 through `App::build` and
//! `run_until`, exactly as `carafe serve` does, with its own fresh database, and talks to it
//! over HTTP. Tests written with `both_backends!` run on SQLite and, when
//! `CARAFE_TEST_POSTGRES_URL` is set (and ignored tests are included), on PostgreSQL; file tests
//! written with `file_tests!` also run on S3 storage when `CARAFE_TEST_S3_URL` is set.

#[macro_use]
mod macros;
mod helpers;
mod sse;

mod accel_nginx;
mod audit;
mod audit_csv;
mod auth;
mod cli;
mod conventions;
mod crashes;
mod file_access;
mod file_bad_input;
mod file_direct;
mod file_encryption;
mod file_lifecycle;
mod file_processing;
mod file_ranges;
mod file_s3;
mod file_s3_parts;
mod file_scan_policy;
mod files;
mod group_writes;
mod handlers;
mod idempotency;
mod job_events;
mod jobs;
mod keys;
mod leases;
mod mail;
mod mail_attachments;
mod mail_campaign_failures;
mod mail_campaign_refusals;
mod mail_campaigns;
mod mail_listener;
mod mail_relays;
mod mail_smtp;
mod mail_templates;
mod mail_unsubscribe;
mod mail_webhooks;
mod mail_webhooks_signed;
mod objects;
mod ops;
mod process;
mod push;
mod push_targets;
mod reserved_queues;
mod schedules;
mod shutdown;
mod tus;
mod tus_clients;
mod tus_encryption;
mod workers;
mod workflow_upkeep;
mod workflows;
