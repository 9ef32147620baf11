//! Conformance checks for `JobStore`: inserting (with unique keys), reading back, the first
//! event, and listing with filters and pages.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fixtures::{claim, insert, job, q, state_of};
use crate::jobs::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

pub async fn jobs_insert_get_and_first_event(store: Arc<dyn Store>) {
    let t = now();
    let mut new = job("mail", t);
    new.owner = Some("user-1".into());
    new.args = json!({"to": "a@example.com", "deep": {"list": [1, 2, 3]}});
    let created = insert(&store, new.clone()).await;
    assert!(created.id.0 > 0);
    assert_eq!(created.queue, new.queue);
    assert_eq!(created.state, JobState::Available);
    assert_eq!(created.args, new.args);
    assert_eq!(
        (created.priority, created.attempt, created.max_attempts),
        (5, 0, 3)
    );
    assert_eq!(created.backoff, new.backoff);
    assert_eq!(created.timeout, Duration::from_secs(30));
    assert_eq!((created.scheduled_at, created.created_at), (t, t));
    assert_eq!(created.owner.as_deref(), Some("user-1"));
    assert!(created.errors.is_empty() && !created.cancel_requested);
    assert_eq!(
        store.get_job(created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.get_job(JobId(created.id.0 + 1000)).await.unwrap(),
        None
    );

    let later = insert(&store, job("mail", t + Duration::from_secs(60))).await;
    assert_eq!(later.state, JobState::Scheduled);
    assert!(later.id > created.id, "ids grow");

    let evs = store.job_events(created.id, 0, 10).await.unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].seq, evs[0].kind.as_str()), (1, "state"));
    assert_eq!(state_of(&evs[0].data), "available");
}

pub async fn jobs_unique_keys(store: Arc<dyn Store>) {
    let t = now();
    let unique = |key: &str, states: &[JobState], period: Option<Duration>| Unique {
        key: key.into(),
        states: states.to_vec(),
        period,
    };
    let mut a = job("reports", t);
    a.unique = Some(unique("daily", &JobState::LIVE, None));
    let first = insert(&store, a.clone()).await;
    let again = store.insert_jobs(vec![a.clone()]).await.unwrap();
    assert_eq!(again, vec![Inserted::Existing(first.clone())]);
    // Another queue has its own keys.
    let mut other = a.clone();
    other.queue = q("other");
    insert(&store, other).await;
    // Twice in one batch: the second is the first.
    let mut b = job("reports", t);
    b.unique = Some(unique("batch", &JobState::LIVE, None));
    let both = store.insert_jobs(vec![b.clone(), b.clone()]).await.unwrap();
    assert!(matches!(both[0], Inserted::Created(_)));
    assert_eq!(both[1], Inserted::Existing(both[0].job().clone()));

    // Once the job completes it no longer blocks the default (live) scope...
    let claimed = claim(&store, "reports", 10, t).await;
    let done: Vec<_> = claimed
        .iter()
        .map(|c| Completion {
            id: c.id,
            lease_token: c.lease_token.clone(),
            result: json!(null),
            outside: false,
        })
        .collect();
    store.complete_jobs(&done, t).await.unwrap();
    assert!(matches!(
        store.insert_jobs(vec![a.clone()]).await.unwrap()[0],
        Inserted::Created(_)
    ));
    // ...but does block a scope that includes completed jobs,
    let mut c = a.clone();
    c.unique = Some(unique("daily", &[JobState::Completed], None));
    assert!(matches!(
        store.insert_jobs(vec![c]).await.unwrap()[0],
        Inserted::Existing(_)
    ));
    // unless it is older than the period.
    let mut d = job("reports", t + Duration::from_secs(7200));
    d.created_at = d.scheduled_at;
    d.unique = Some(unique(
        "daily",
        &[JobState::Completed],
        Some(Duration::from_secs(3600)),
    ));
    assert!(matches!(
        store.insert_jobs(vec![d]).await.unwrap()[0],
        Inserted::Created(_)
    ));
}

pub async fn jobs_listing_filters_and_pages(store: Arc<dyn Store>) {
    let t = now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut n = job(if i % 2 == 0 { "even" } else { "odd" }, t);
        n.owner = Some(format!("u{}", i % 2));
        ids.push(insert(&store, n).await.id);
    }
    insert(&store, job("even", t + Duration::from_secs(300))).await;
    let all = store
        .list_jobs(&JobFilter::default(), &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 6);
    assert!(
        all.items.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );

    let even = JobFilter {
        queue: Some(q("even")),
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_jobs(&even, &page, t).await.unwrap();
        seen.extend(got.items.iter().map(|j| j.id));
        match got.next_after {
            Some(a) => page.after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    let available = JobFilter {
        queue: Some(q("even")),
        state: Some(JobState::Available),
        ..JobFilter::default()
    };
    let got = store
        .list_jobs(&available, &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(
        got.items.len(),
        3,
        "the future job is scheduled, not available"
    );
    let scheduled = JobFilter {
        state: Some(JobState::Scheduled),
        ..JobFilter::default()
    };
    assert_eq!(
        store
            .list_jobs(&scheduled, &PageRequest::first(100), t)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let later = t + Duration::from_secs(600);
    assert_eq!(
        store
            .list_jobs(&scheduled, &PageRequest::first(100), later)
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    let mine = JobFilter {
        owner: Some("u1".into()),
        ..JobFilter::default()
    };
    let got = store
        .list_jobs(&mine, &PageRequest::first(100), t)
        .await
        .unwrap();
    assert_eq!(
        got.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[3], ids[1]]
    );
}

/// Jobs of reserved (`carafe.*`) queues can be left out of listings, and any job's queue can
/// be looked up by id (for the rule on who may act on reserved queues).
pub async fn jobs_reserved_queues_are_listed_apart(store: Arc<dyn Store>) {
    let t = now();
    let own = insert(&store, job("carafe.files", t)).await;
    let app = insert(&store, job("carafes", t)).await;
    let all = store
        .list_jobs(&JobFilter::default(), &PageRequest::first(10), t)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    let public = JobFilter {
        exclude_reserved: true,
        ..JobFilter::default()
    };
    let listed = store
        .list_jobs(&public, &PageRequest::first(10), t)
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|j| j.id).collect::<Vec<_>>(),
        [app.id]
    );
    let mut queues = store
        .job_queues(&[own.id, app.id, JobId(app.id.0 + 1000)])
        .await
        .unwrap();
    queues.sort_by_key(|(id, _)| *id);
    assert_eq!(
        queues,
        vec![(own.id, q("carafe.files")), (app.id, q("carafes"))],
        "missing jobs are left out"
    );
    assert!(store.job_queues(&[]).await.unwrap().is_empty());
}
