//! Builders and steps that the conformance cases of several capabilities share.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::audit::NewAuditEvent;
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

pub(super) fn audit(action: &str) -> NewAuditEvent {
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
pub(super) fn wrapped_key(kid: &str, n: u8) -> crate::files::FileEncryption {
    crate::files::FileEncryption {
        kid: kid.into(),
        wrapped: format!("w{n}"),
        segment: 65536,
    }
}

/// Key rotation's walk, for files and uploads alike: `ids[0..3]` are wrapped under `old`.
/// Lists what is not under `new` two rows at a time, rewraps it all under `new`, and checks
/// that nothing is left to list.
pub(super) async fn rewrap_in_pages<I: Copy + PartialEq + std::fmt::Debug>(
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

pub(super) fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

pub(super) fn job(queue: &str, at: OffsetDateTime) -> NewJob {
    NewJob {
        queue: q(queue),
        args: json!({"n": 1}),
        priority: 5,
        max_attempts: 3,
        backoff: Some(Backoff::Fixed { delay_ms: 1000 }),
        timeout: Duration::from_secs(30),
        scheduled_at: at,
        unique: None,
        owner: None,
        target: None,
        // Jobs for the future are created now; jobs for the past were created then.
        created_at: at.min(now()),
    }
}

pub(super) async fn insert(store: &Arc<dyn Store>, new: NewJob) -> Job {
    match store.insert_jobs(vec![new]).await.unwrap().remove(0) {
        Inserted::Created(j) => j,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The server's default lease in these tests (unlike the test jobs' 30 s timeout).
pub(super) const DEFAULT_LEASE: Duration = Duration::from_secs(45);

/// A lease of `asked` length, else the queue's, else `DEFAULT_LEASE`.
pub(super) fn lease(asked: Option<Duration>) -> LeaseLength {
    LeaseLength {
        asked,
        default: DEFAULT_LEASE,
    }
}

pub(super) async fn claim(
    store: &Arc<dyn Store>,
    queue: &str,
    max: u32,
    at: OffsetDateTime,
) -> Vec<ClaimedJob> {
    let queue = q(queue);
    store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w1",
            max,
            lease: lease(None),
            now: at,
            push: false,
        })
        .await
        .unwrap()
}

pub(super) async fn events(store: &Arc<dyn Store>, id: JobId) -> Vec<(String, Value)> {
    store
        .job_events(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

pub(super) fn state_of(data: &Value) -> &str {
    data["state"].as_str().unwrap_or("")
}
