//! Job-store behaviour the conformance suite cannot reach on its own: what several servers
//! racing on one database must not break, and the batch paths that resolve in one statement
//! what SQLite decides row by row. Needs `CARAFE_TEST_POSTGRES_URL`; ignored otherwise.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::Store;
use carafe_core::jobs::{
    Claim, Completion, Fenced, Inserted, JobState, LeaseLength, NewJob, QueueName, Unique,
};
use carafe_core::store::prelude::*;
use carafe_store_postgres::PgStore;
use carafe_store_postgres::testing::fresh_database_url;
use serde_json::json;
use time::OffsetDateTime;

fn q(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn job(queue: &str, at: OffsetDateTime, unique: Option<(&str, &[JobState])>) -> NewJob {
    NewJob {
        queue: q(queue),
        args: json!({"n": 1}),
        priority: 0,
        max_attempts: 3,
        backoff: None,
        timeout: Duration::from_secs(30),
        scheduled_at: at,
        unique: unique.map(|(key, states)| Unique {
            key: key.into(),
            states: states.to_vec(),
            period: None,
        }),
        owner: None,
        target: None,
        created_at: at.min(carafe_core::time::now()),
    }
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn concurrent_inserts_of_one_unique_key_create_one_job() {
    let url = fresh_database_url().await;
    let first = PgStore::connect(&url, 4).await.unwrap();
    first.migrate().await.unwrap();
    // Two "servers", each inserting from four tasks at once.
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(first),
        Arc::new(PgStore::connect(&url, 4).await.unwrap()),
    ];
    let t = carafe_core::time::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let batch = vec![
                job("uq", t, None),
                job("uq", t, Some(("nightly", &JobState::LIVE))),
            ];
            store.insert_jobs(batch).await.unwrap().remove(1)
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        created += usize::from(matches!(got, Inserted::Created(_)));
        ids.push(got.job().id);
    }
    assert_eq!(created, 1);
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "all answers are the same job: {ids:?}"
    );
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn unique_keys_within_one_batch_see_earlier_jobs_effective_states() {
    let url = fresh_database_url().await;
    let store = PgStore::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let t = carafe_core::time::now();
    let later = t + Duration::from_secs(600);
    let scheduled: &[JobState] = &[JobState::Scheduled];
    let available: &[JobState] = &[JobState::Available];
    let got = store
        .insert_jobs(vec![
            job("b", later, Some(("k", scheduled))),
            // The first job is scheduled, so a key scoped to available jobs does not see it...
            job("b", later, Some(("k", available))),
            // ...and a key scoped to scheduled jobs sees the newest scheduled one.
            job("b", later, Some(("k", scheduled))),
            job("b", t, None),
        ])
        .await
        .unwrap();
    assert!(matches!(got[0], Inserted::Created(_)));
    assert!(matches!(got[1], Inserted::Created(_)));
    assert_eq!(got[2], Inserted::Existing(got[1].job().clone()));
    assert!(matches!(got[3], Inserted::Created(_)));
    let ids: Vec<_> = [0, 1, 3].iter().map(|&i| got[i].job().id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids follow the batch's order"
    );
    for inserted in &got {
        let events = store.job_events(inserted.job().id, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1, "one first event per created job");
    }
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn repeated_completions_in_one_batch_are_answered_in_order() {
    let url = fresh_database_url().await;
    let store = PgStore::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let t = carafe_core::time::now();
    store
        .insert_jobs(vec![job("dup", t, None), job("dup", t, None)])
        .await
        .unwrap();
    let queue = q("dup");
    let claim = Claim {
        queue: &queue,
        worker: "w",
        max: 2,
        lease: LeaseLength {
            asked: None,
            default: Duration::from_secs(60),
        },
        now: t,
        push: false,
    };
    let c = store.claim_jobs(claim).await.unwrap();
    let done = |i: usize, token: &str| Completion {
        id: c[i].id,
        lease_token: token.into(),
        result: json!(i),
        outside: false,
    };
    let items = vec![
        done(0, c[0].lease_token.as_str()),
        done(0, c[0].lease_token.as_str()),
        done(1, "stale"),
        done(1, c[1].lease_token.as_str()),
    ];
    let got: Vec<_> = (store.complete_jobs(&items, t).await.unwrap().outcome)
        .into_iter()
        .map(|f| f.map(|_| ()))
        .collect();
    let want = [
        Fenced::Done(()),
        Fenced::LeaseLost,
        Fenced::LeaseLost,
        Fenced::Done(()),
    ];
    assert_eq!(got, want);
    for claimed in &c {
        let events = store.job_events(claimed.id, 0, 10).await.unwrap();
        assert_eq!(events.len(), 3, "created, running, completed: once each");
        assert_eq!(events[2].data["state"], "completed");
    }
}
