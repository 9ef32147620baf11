//! The store conformance suite: one set of behaviours every backend must show, one file per
//! store trait (named like the trait's file one level up). Each backend's tests call
//! `conformance_tests!` with a function that makes a fresh, migrated store.

mod audit;
mod backend;
mod campaigns;
mod direct;
mod failures;
mod files;
mod fixtures;
mod idempotency;
mod jobs;
mod keys;
mod leader;
mod leases;
mod mail;
mod mail_feedback;
mod mail_outbox;
mod mail_suppressions;
mod multipart;
mod queue_admin;
mod rate_groups;
mod schedules;
mod templates;
mod uploads;
mod workflows;

pub use audit::*;
pub use backend::*;
pub use campaigns::*;
pub use direct::*;
pub use failures::*;
pub use files::*;
pub use idempotency::*;
pub use jobs::*;
pub use keys::*;
pub use leader::*;
pub use leases::*;
pub use mail::*;
pub use mail_feedback::*;
pub use mail_outbox::*;
pub use mail_suppressions::*;
pub use multipart::*;
pub use queue_admin::*;
pub use rate_groups::*;
pub use schedules::*;
pub use templates::*;
pub use uploads::*;
pub use workflows::*;

/// Generates one `#[tokio::test]` per conformance check. `$make` is an async fn returning a
/// fresh `Arc<dyn Store>`; extra attributes (such as `#[ignore = "…"]`) go on every test.
/// One line per store trait; `workflows_sweep_reaches_every_running_workflow` is not here, as
/// it also needs a way to write behind the store's back (`RawSql`).
#[macro_export]
macro_rules! conformance_tests {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::conformance_tests!(@each $make, [$(#[$attr])*],
            ping_and_migrations_are_current,
            keys_round_trip, keys_are_unique, keys_paginate_in_creation_order,
            revoking_is_idempotent_and_audited,
            idempotency_reserve_complete_replay, idempotency_release_expiry_and_takeover,
            idempotency_scopes_are_isolated, idempotency_prune_removes_only_expired,
            idempotency_only_the_holder_completes, idempotency_only_the_holder_releases,
            idempotency_renewal_keeps_the_key,
            audit_lists_newest_first, audit_filters_by_target, audit_filters_by_action,
            audit_filters_by_actor, audit_filters_by_time, audit_filters_combine_and_paginate,
            jobs_insert_get_and_first_event, jobs_unique_keys, jobs_listing_filters_and_pages,
            jobs_reserved_queues_are_listed_apart,
            jobs_claim_order_and_leases, jobs_heartbeats_are_fenced, jobs_completion_is_fenced,
            jobs_completion_from_outside_spares_reserved_queues,
            jobs_concurrent_claims_never_overlap, jobs_push_jobs_are_claimed_apart,
            jobs_failures_retry_then_discard, jobs_expired_leases_are_rescued,
            jobs_cancellation, jobs_retry_revives_finished_jobs, jobs_pruning, jobs_queue_stats,
            jobs_paused_queues_are_not_claimed, jobs_queue_limits, jobs_queue_leases,
            rate_groups_are_shared_by_their_queues, rate_groups_slow_down_once_and_recover,
            schedules_are_stored_listed_and_fired_once,
            workflows_chain_pass_results_along, workflows_chords_call_back_once,
            workflows_stop_at_a_failed_step, workflows_advance_with_the_step_that_ends,
            workflows_keep_their_steps_until_they_finish,
            files_buckets_are_created_replaced_and_listed,
            files_are_recorded_with_their_job_and_listed, files_processing_ends_once,
            files_deletion_hides_then_purges, files_legal_holds_block_deletion_and_retention,
            files_encryption_is_kept_and_rewrapped,
            uploads_are_recorded_and_read_back, uploads_locks_exclude_other_holders,
            uploads_concurrent_locks_have_one_winner, uploads_advances_are_fenced,
            uploads_end_once_and_expire, uploads_keep_and_rewrap_their_data_keys,
            direct_uploads_transition_once_and_expire,
            multipart_records_are_listed_stale_oldest_first,
            multipart_records_are_forgotten_one_upload_at_a_time,
            mail_is_kept_with_a_message_and_job_per_recipient,
            mail_batches_are_stored_together_or_not_at_all,
            mail_sending_moves_through_its_states_once,
            mail_sending_batches_answer_each_message,
            mail_cancellation_spares_what_is_sent_or_sending,
            mail_messages_are_listed_with_filters_and_pages,
            mail_outbox_captures_lists_and_clears,
            mail_feedback_finds_the_message_it_names,
            mail_feedback_is_recorded_once_and_moves_only_sent_messages,
            mail_suppressions_are_kept_listed_and_removed,
            templates_are_versioned_per_name_with_their_locales,
            templates_concurrent_puts_get_their_own_versions,
            campaigns_keep_their_recipients_in_row_order,
            campaigns_import_skips_repeated_addresses,
            campaigns_change_state_only_from_the_states_named,
            campaigns_expand_only_with_their_cursor,
            campaigns_count_cancel_and_requeue_their_messages,
            leader_election);
    };
    (@each $make:path, $attrs:tt, $($name:ident),*) => {
        $( $crate::conformance_tests!(@one $make, $attrs, $name); )*
    };
    (@one $make:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $name() {
            $crate::store::conformance::$name($make().await).await
        }
    };
}
