//! The store conformance suite: one set of behaviours every backend must show. Each backend's
//! tests call `conformance_tests!` with a function that makes a fresh, migrated store.

use std::sync::Arc;

use serde_json::json;

use crate::StoreError;

mod audit_log;
mod files;
mod flows;
mod idempotency;
mod jobs;
mod lifecycle;
mod multipart;
mod queues;
mod uploads;
mod workflow_upkeep;
use crate::audit::{AuditFilter, NewAuditEvent};
use crate::keys::{KeyHash, KeyId, KeyName, NewApiKey, Scope, Scopes};
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::{Duration, now};
pub use audit_log::*;
pub use files::*;
pub use flows::*;
pub use idempotency::*;
pub use jobs::*;
pub use lifecycle::*;
pub use multipart::*;
pub use queues::*;
pub use uploads::*;
pub use workflow_upkeep::*;

/// Generates one `#[tokio::test]` per conformance check. `$make` is an async fn returning a
/// fresh `Arc<dyn Store>`; extra attributes (such as `#[ignore = "…"]`) go on every test.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::conformance_tests!(@each $make, [$(#[$attr])*],
            keys_round_trip, keys_are_unique, keys_paginate_in_creation_order,
            revoking_is_idempotent_and_audited, idempotency_reserve_complete_replay,
            idempotency_release_expiry_and_takeover, idempotency_scopes_are_isolated,
            idempotency_prune_removes_only_expired, idempotency_only_the_holder_completes,
            idempotency_only_the_holder_releases, idempotency_renewal_keeps_the_key,
            audit_lists_newest_first,
            audit_filters_by_target, audit_filters_by_action, audit_filters_by_actor,
            audit_filters_by_time, audit_filters_combine_and_paginate,
            ping_and_migrations_are_current,
            jobs_insert_get_and_first_event, jobs_unique_keys, jobs_claim_order_and_leases,
            jobs_paused_queues_are_not_claimed, jobs_heartbeats_are_fenced,
            jobs_completion_is_fenced, jobs_failures_retry_then_discard, jobs_cancellation,
            jobs_retry_revives_finished_jobs, jobs_expired_leases_are_rescued, jobs_pruning,
            jobs_listing_filters_and_pages, jobs_queue_stats, jobs_concurrent_claims_never_overlap,
            jobs_queue_limits, jobs_queue_leases, jobs_reserved_queues_are_listed_apart,
            jobs_push_jobs_are_claimed_apart,
            schedules_are_stored_listed_and_fired_once, workflows_chain_pass_results_along,
            workflows_chords_call_back_once, workflows_stop_at_a_failed_step,
            workflows_advance_with_the_step_that_ends, workflows_keep_their_steps_until_they_finish,
            leader_election,
            files_buckets_are_created_replaced_and_listed,
            files_are_recorded_with_their_job_and_listed, files_processing_ends_once,
            files_deletion_hides_then_purges,
            files_legal_holds_block_deletion_and_retention, files_encryption_is_kept_and_rewrapped,
            uploads_are_recorded_and_read_back,
            uploads_locks_exclude_other_holders, uploads_concurrent_locks_have_one_winner,
            uploads_advances_are_fenced, uploads_end_once_and_expire,
            uploads_keep_and_rewrap_their_data_keys, direct_uploads_transition_once_and_expire,
            multipart_records_are_listed_stale_oldest_first,
            multipart_records_are_forgotten_one_upload_at_a_time);
    };
    (@each $make:path, $attrs:tt, $($name:ident),*) => {
        $( $crate::conformance_tests!(@one $make, $attrs, $name); )*
    };
    (@one $make:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $name() {
            $crate::testing::$name($make().await).await
        }
    };
}

fn audit(action: &str) -> NewAuditEvent {
    NewAuditEvent {
        at: now(),
        actor: "cli".into(),
        action: action.into(),
        target: None,
        request_id: Some("req-1".into()),
        details: json!({"n": 1}).into(),
    }
}

/// The `n`th data key of a test, wrapped under master key `kid`.
fn wrapped_key(kid: &str, n: u8) -> crate::files::FileEncryption {
    crate::files::FileEncryption {
        kid: kid.into(),
        wrapped: format!("w{n}"),
        segment: 65536,
    }
}

/// Key rotation's walk, for files and uploads alike: `ids[0..3]` are wrapped under `old`.
/// Lists what is not under `new` two rows at a time, rewraps it all under `new`, and checks
/// that nothing is left to list.
async fn rewrap_in_pages<I: Copy + PartialEq + std::fmt::Debug>(
    ids: &[I],
    list: impl AsyncFn(Option<I>, u32) -> Vec<(I, crate::files::FileEncryption)>,
    set: impl AsyncFn(Vec<(I, crate::files::FileEncryption)>),
) {
    let first = list(None, 2).await;
    assert_eq!(
        first,
        vec![
            (ids[0], wrapped_key("old", 0)),
            (ids[1], wrapped_key("old", 1))
        ]
    );
    let rest = list(Some(ids[1]), 2).await;
    assert_eq!(rest, vec![(ids[2], wrapped_key("old", 2))]);
    let rewrapped: Vec<_> = [first, rest]
        .concat()
        .into_iter()
        .map(|(id, e)| (id, wrapped_key("new", e.wrapped[1..].parse().unwrap())))
        .collect();
    set(rewrapped).await;
    assert!(list(None, 10).await.is_empty());
}

fn new_key(name: &str, hash_byte: u8) -> NewApiKey {
    NewApiKey {
        id: KeyId::new(),
        name: KeyName::parse(name).unwrap(),
        prefix: format!("ck_{hash_byte:08}"),
        hash: KeyHash([hash_byte; 32]),
        scopes: Scopes::empty().with(Scope::Files).with(Scope::Jobs),
        created_at: now(),
    }
}

pub async fn keys_round_trip(store: Arc<dyn Store>) {
    let new = new_key("deploy", 1);
    let saved = store
        .insert_key(new.clone(), audit("key.create"))
        .await
        .unwrap();
    assert_eq!(saved.id, new.id);
    assert_eq!(saved.name, new.name);
    assert_eq!(saved.prefix, new.prefix);
    assert_eq!(saved.scopes, new.scopes);
    assert_eq!(saved.created_at, new.created_at);
    assert_eq!(saved.revoked_at, None);

    let found = store.find_key_by_hash(&KeyHash([1; 32])).await.unwrap();
    assert_eq!(found.as_ref(), Some(&saved));
    assert_eq!(store.get_key(new.id).await.unwrap(), Some(saved));
    assert_eq!(
        store.find_key_by_hash(&KeyHash([2; 32])).await.unwrap(),
        None
    );
    assert_eq!(store.get_key(KeyId::new()).await.unwrap(), None);
    assert_eq!(store.count_active_keys().await.unwrap(), 1);

    let events = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        events.items.len(),
        1,
        "the key's audit event is written with it"
    );
    assert_eq!(events.items[0].action, "key.create");
    assert_eq!(events.items[0].details, json!({"n": 1}));
}

pub async fn keys_are_unique(store: Arc<dyn Store>) {
    let first = new_key("a", 7);
    store
        .insert_key(first.clone(), audit("key.create"))
        .await
        .unwrap();
    let same_hash = NewApiKey {
        id: KeyId::new(),
        ..first.clone()
    };
    let err = store
        .insert_key(same_hash, audit("key.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let same_id = NewApiKey {
        hash: KeyHash([8; 32]),
        ..first
    };
    let err = store
        .insert_key(same_id, audit("key.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // A failed insert leaves no audit event behind: both are one transaction.
    let events = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
}

pub async fn keys_paginate_in_creation_order(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let k = new_key(&format!("k{i}"), 10 + i);
        ids.push(k.id);
        store.insert_key(k, audit("key.create")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_keys(&page).await.unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.iter().map(|k| k.id));
        match got.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

pub async fn revoking_is_idempotent_and_audited(store: Arc<dyn Store>) {
    let k = new_key("old", 3);
    store
        .insert_key(k.clone(), audit("key.create"))
        .await
        .unwrap();
    let t1 = now();
    let revoked = store
        .revoke_key(k.id, t1, audit("key.revoke"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t1));
    assert!(!revoked.is_active());
    let later = t1 + Duration::seconds(5);
    let again = store
        .revoke_key(k.id, later, audit("key.revoke"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(t1),
        "the first revocation time is kept"
    );
    assert_eq!(
        store
            .revoke_key(KeyId::new(), t1, audit("key.revoke"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.count_active_keys().await.unwrap(), 0);
    let found = store
        .find_key_by_hash(&KeyHash([3; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.revoked_at, Some(t1));
    let actions: Vec<_> = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["key.revoke", "key.revoke", "key.create"]);
}

pub async fn ping_and_migrations_are_current(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    let stats = store.pool_stats();
    assert!(stats.max >= 1 && stats.size <= stats.max, "{stats:?}");
}
