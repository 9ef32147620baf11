//! Conformance checks for queues as a whole: listing, figures, concurrent claimers, limits,
//! push jobs, and leader election.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::jobs::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

use super::jobs::{DEFAULT_LEASE, claim, insert, job, lease, q};

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

pub async fn jobs_queue_stats(store: Arc<dyn Store>) {
    let t = now();
    insert(&store, job("s", t)).await;
    insert(&store, job("s", t - Duration::from_secs(10))).await;
    insert(&store, job("s", t + Duration::from_secs(60))).await;
    let c = claim(&store, "s", 1, t).await.remove(0);
    store
        .complete_jobs(
            &[Completion {
                id: c.id,
                lease_token: c.lease_token,
                result: json!(1),
            }],
            t,
        )
        .await
        .unwrap();
    let stats = store.queue_stats(t).await.unwrap();
    let s = stats.iter().find(|s| s.queue == "s").unwrap();
    let count = |st| {
        s.counts
            .iter()
            .find(|(x, _)| *x == st)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(JobState::Available), 1);
    assert_eq!(count(JobState::Scheduled), 1);
    assert_eq!(count(JobState::Completed), 1);
    assert_eq!(s.oldest_available_at, Some(t));
    assert_eq!(s.completed_last_minute, 1);
    assert!(!s.paused);
}

pub async fn jobs_concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    let t = now();
    let jobs: Vec<_> = (0..200).map(|_| job("race", t)).collect();
    store.insert_jobs(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let queue = q("race");
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(Claim {
                        queue: &queue,
                        worker: &worker,
                        max: 7,
                        lease: super::jobs::lease(None),
                        now: t,
                        push: false,
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (200, 200),
        "every job claimed exactly once"
    );
}

pub async fn leader_election(store: Arc<dyn Store>) {
    let t = now();
    let ttl = Duration::from_secs(10);
    assert!(store.try_lead("maint", "a", t + ttl, t).await.unwrap());
    assert!(
        store
            .try_lead("maint", "a", t + ttl * 2, t + ttl / 2)
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        !store
            .try_lead("maint", "b", t + ttl * 2, t + ttl)
            .await
            .unwrap()
    );
    assert!(
        store.try_lead("other", "b", t + ttl, t).await.unwrap(),
        "leases are per name"
    );
    let after = t + ttl * 3;
    assert!(
        store
            .try_lead("maint", "b", after + ttl, after)
            .await
            .unwrap(),
        "an expired lease is taken over"
    );
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
    store.resign("maint", "a").await.unwrap();
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap(),
        "only the holder resigns"
    );
    store.resign("maint", "b").await.unwrap();
    assert!(
        store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
}

pub async fn jobs_queue_limits(store: Arc<dyn Store>) {
    let t = now();
    let batch: Vec<_> = (0..20).map(|_| job("limited", t)).collect();
    store.insert_jobs(batch).await.unwrap();
    let limits = QueueLimits {
        concurrency: Some(3),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&q("limited"), limits).await.unwrap();
    let first = claim(&store, "limited", 10, t).await;
    assert_eq!(
        first.len(),
        3,
        "no more than the concurrency limit run at once"
    );
    assert!(claim(&store, "limited", 10, t).await.is_empty());
    let done = Completion {
        id: first[0].id,
        lease_token: first[0].lease_token.clone(),
        result: json!(1),
    };
    store.complete_jobs(&[done], t).await.unwrap();
    assert_eq!(
        claim(&store, "limited", 10, t).await.len(),
        1,
        "a finished job frees a slot"
    );
    let stats = store.queue_stats(t).await.unwrap();
    assert_eq!(
        stats.iter().find(|s| s.queue == "limited").unwrap().limits,
        limits
    );

    // A rate of 4 per second: a burst of 4, then refills with time (a new rate starts full,
    // counted from when it was set).
    let rated = QueueLimits {
        rate_per_second: Some(4.0),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&q("limited"), rated).await.unwrap();
    let t = now() + Duration::from_millis(1);
    assert_eq!(claim(&store, "limited", 10, t).await.len(), 4);
    assert!(claim(&store, "limited", 10, t).await.is_empty());
    let half = t + Duration::from_millis(500);
    assert_eq!(
        claim(&store, "limited", 10, half).await.len(),
        2,
        "half a second, two tokens"
    );
    let later = t + Duration::from_secs(60);
    assert_eq!(
        claim(&store, "limited", 10, later).await.len(),
        4,
        "the bucket holds one second"
    );
    store
        .set_queue_limits(&q("limited"), QueueLimits::default())
        .await
        .unwrap();
    assert_eq!(
        claim(&store, "limited", 10, later).await.len(),
        6,
        "no limits: the rest"
    );
}

pub async fn jobs_push_jobs_are_claimed_apart(store: Arc<dyn Store>) {
    let t = now();
    let pull = insert(&store, job("mixed", t)).await;
    let mut p = job("mixed", t);
    p.target = Some("https://app.example/hooks/jobs".into());
    let push = insert(&store, p).await;
    assert_eq!(
        push.target.as_deref(),
        Some("https://app.example/hooks/jobs")
    );
    assert_eq!(
        store.get_job(push.id).await.unwrap().unwrap().target,
        push.target
    );
    let mut later = job("later", t + Duration::from_secs(60));
    later.target = Some("https://app.example/hooks/later".into());
    insert(&store, later).await;
    assert_eq!(store.push_queues(t).await.unwrap(), vec![q("mixed")]);

    let pulled = claim(&store, "mixed", 10, t).await;
    assert_eq!(
        pulled.iter().map(|c| c.id).collect::<Vec<_>>(),
        [pull.id],
        "pull workers never get push jobs"
    );
    let queue = q("mixed");
    let pushed = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "dispatcher",
            max: 10,
            lease: super::jobs::lease(None),
            now: t,
            push: true,
        })
        .await
        .unwrap();
    assert_eq!(pushed.iter().map(|c| c.id).collect::<Vec<_>>(), [push.id]);
    assert_eq!(pushed[0].target, push.target);
    assert!(store.push_queues(t).await.unwrap().is_empty());
    let due = store
        .push_queues(t + Duration::from_secs(61))
        .await
        .unwrap();
    assert_eq!(due, vec![q("later")]);
}

/// A lease is what the claim asked for, else the queue's `lease`, else the default; a
/// heartbeat that asks for none renews it to the queue's (read at that moment).
pub async fn jobs_queue_leases(store: Arc<dyn Store>) {
    let t = now();
    for _ in 0..3 {
        insert(&store, job("leased", t)).await;
    }
    let queue = q("leased");
    let claim_one = async |asked| {
        let claim = Claim {
            queue: &queue,
            worker: "w",
            max: 1,
            lease: lease(asked),
            now: t,
            push: false,
        };
        store.claim_jobs(claim).await.unwrap().remove(0)
    };
    let plain = claim_one(None).await;
    assert_eq!(plain.lease_expires_at, t + DEFAULT_LEASE);
    let ten = Duration::from_secs(10);
    let set = QueueLimits {
        lease: Some(ten),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&queue, set).await.unwrap();
    let stats = store.queue_stats(t).await.unwrap();
    let leased = stats.iter().find(|s| s.queue == "leased").unwrap();
    assert_eq!(leased.limits.lease, Some(ten));
    let short = claim_one(None).await;
    assert_eq!(short.lease_expires_at, t + ten, "the queue's lease");
    assert_eq!(short.lease, ten);
    let asked = claim_one(Some(Duration::from_secs(99))).await;
    assert_eq!(
        asked.lease_expires_at,
        t + Duration::from_secs(99),
        "what the claim asked for wins"
    );
    // Heartbeats: none asked renews to the queue's lease; `None` keeps the expiry.
    let later = t + Duration::from_secs(5);
    let hb = |renew| Heartbeat {
        id: plain.id,
        lease_token: &plain.lease_token,
        now: later,
        renew,
        progress: None,
        checkpoint: None,
    };
    let ack = store.heartbeat_job(hb(Some(lease(None)))).await.unwrap();
    let Fenced::Done(ack) = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(ack.lease_expires_at, later + ten);
    let kept = store.heartbeat_job(hb(None)).await.unwrap();
    assert_eq!(kept, Fenced::Done(ack), "a progress report keeps the lease");
    let asked = store
        .heartbeat_job(hb(Some(lease(Some(Duration::from_secs(3))))))
        .await
        .unwrap();
    let Fenced::Done(asked) = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(asked.lease_expires_at, later + Duration::from_secs(3));
    // Clearing the setting brings the default back.
    store
        .set_queue_limits(&queue, QueueLimits::default())
        .await
        .unwrap();
    let ack = store.heartbeat_job(hb(Some(lease(None)))).await.unwrap();
    let Fenced::Done(ack) = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(ack.lease_expires_at, later + DEFAULT_LEASE);
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
