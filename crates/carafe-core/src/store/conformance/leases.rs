//! Conformance checks for `LeaseStore`: claim order, fenced heartbeats and completions,
//! concurrent claimers that never share a job, and push jobs claimed apart from pulled ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fixtures::{DEFAULT_LEASE, claim, events, insert, job, lease, q, state_of};
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

pub async fn jobs_claim_order_and_leases(store: Arc<dyn Store>) {
    let t = now();
    let mut low = job("work", t);
    low.priority = 9;
    let low = insert(&store, low).await;
    let mut high = job("work", t + Duration::from_millis(5));
    high.priority = 0;
    high.scheduled_at = t;
    let high = insert(&store, high).await;
    let normal = insert(&store, job("work", t)).await;
    let future = insert(&store, job("work", t + Duration::from_secs(60))).await;
    insert(&store, job("elsewhere", t)).await;

    let got = claim(&store, "work", 2, t).await;
    let ids: Vec<_> = got.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [high.id, normal.id],
        "priority first, then time and id"
    );
    assert_ne!(got[0].lease_token, got[1].lease_token);
    assert!(got[0].lease_token.as_str().len() >= 32);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(
        got[0].lease_expires_at,
        t + DEFAULT_LEASE,
        "the default lease, not the job's timeout"
    );
    assert_eq!(got[0].lease, DEFAULT_LEASE);
    let running = store.get_job(high.id).await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempted_by.as_deref(), Some("w1"));
    assert_eq!(running.attempted_at, Some(t));
    let evs = events(&store, high.id).await;
    assert_eq!(evs.len(), 2);
    assert_eq!(state_of(&evs[1].1), "running");

    // An explicit lease overrides the default.
    let queue = q("work");
    let got = store
        .claim_jobs(Claim {
            queue: &queue,
            worker: "w2",
            max: 10,
            lease: lease(Some(Duration::from_secs(5))),
            now: t,
            push: false,
        })
        .await
        .unwrap();
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), [low.id]);
    assert_eq!(got[0].lease_expires_at, t + Duration::from_secs(5));
    assert!(
        claim(&store, "work", 10, t).await.is_empty(),
        "the future job waits"
    );
    let got = claim(&store, "work", 10, t + Duration::from_secs(60)).await;
    assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), [future.id]);
}

pub async fn jobs_heartbeats_are_fenced(store: Arc<dyn Store>) {
    let t = now();
    let j = insert(&store, job("hb", t)).await;
    let c = claim(&store, "hb", 1, t).await.remove(0);
    let until = t + Duration::from_secs(120);
    let renew = Some(lease(Some(Duration::from_secs(120))));
    let progress = Progress {
        current: 3,
        total: Some(10),
        stage: Some("resize".into()),
        message: None,
    };
    let ack = store
        .heartbeat_job(Heartbeat {
            id: j.id,
            lease_token: c.lease_token.clone(),
            now: t,
            renew,
            progress: Some(progress.clone()),
            checkpoint: Some(json!({"page": 3})),
        })
        .await
        .unwrap();
    assert_eq!(
        ack,
        Fenced::Done(HeartbeatAck {
            cancel_requested: false,
            lease_expires_at: until
        })
    );
    let saved = store.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(saved.progress, Some(progress.clone()));
    assert_eq!(saved.checkpoint, Some(json!({"page": 3})));
    assert_eq!(saved.lease_expires_at, Some(until));
    let evs = events(&store, j.id).await;
    assert_eq!(evs.last().unwrap().0, "progress");
    assert_eq!(evs.last().unwrap().1["progress"]["current"], 3);

    // Without progress, a heartbeat writes no event.
    let plain = Heartbeat {
        id: j.id,
        lease_token: c.lease_token.clone(),
        now: t,
        renew,
        progress: None,
        checkpoint: None,
    };
    store.heartbeat_job(plain.clone()).await.unwrap();
    assert_eq!(events(&store, j.id).await.len(), evs.len());

    let wrong = Heartbeat {
        lease_token: LeaseToken::from("not-the-token"),
        ..plain.clone()
    };
    assert_eq!(
        store.heartbeat_job(wrong.clone()).await.unwrap(),
        Fenced::LeaseLost
    );
    let missing = Heartbeat {
        id: JobId(j.id.0 + 999),
        ..plain.clone()
    };
    assert_eq!(
        store.heartbeat_job(missing.clone()).await.unwrap(),
        Fenced::NotFound
    );

    // In one batch each heartbeat answers for itself, in order: a second report of the same
    // job sees the first's progress kept and adds its own event.
    let step = |n: u64| Heartbeat {
        progress: Some(Progress {
            current: n,
            ..progress.clone()
        }),
        ..plain.clone()
    };
    let before = events(&store, j.id).await.len();
    let answers = store
        .heartbeat_jobs(&[step(4), wrong, missing, step(5)])
        .await
        .unwrap();
    assert!(answers[0].is_done() && answers[3].is_done());
    assert_eq!(answers[1..3], [Fenced::LeaseLost, Fenced::NotFound]);
    let evs = events(&store, j.id).await;
    assert_eq!(evs.len(), before + 2);
    assert_eq!(evs[evs.len() - 2].1["progress"]["current"], 4);
    assert_eq!(evs[evs.len() - 1].1["progress"]["current"], 5);
    assert_eq!(
        store
            .get_job(j.id)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap()
            .current,
        5
    );
}

/// The lease token of job `id` among `claimed`.
fn token_of(claimed: &[ClaimedJob], id: JobId) -> LeaseToken {
    let job = claimed.iter().find(|c| c.id == id).expect("claimed");
    job.lease_token.clone()
}

pub async fn jobs_completion_is_fenced(store: Arc<dyn Store>) {
    let t = now();
    let a = insert(&store, job("c", t)).await;
    let b = insert(&store, job("c", t)).await;
    let claimed = claim(&store, "c", 2, t).await;
    let token = |id: JobId| token_of(&claimed, id);
    let items = vec![
        Completion {
            id: a.id,
            lease_token: token(a.id),
            result: json!({"ok": true}),
            outside: false,
        },
        Completion {
            id: b.id,
            lease_token: "stale".into(),
            result: json!(1),
            outside: false,
        },
        Completion {
            id: JobId(b.id.0 + 999),
            lease_token: "x".into(),
            result: json!(1),
            outside: false,
        },
    ];
    let done = store
        .complete_jobs(&items, t + Duration::from_secs(1))
        .await
        .unwrap()
        .outcome;
    let a2 = store.get_job(a.id).await.unwrap().unwrap();
    // A completed item answers with the job as it now is.
    assert_eq!(
        done,
        vec![
            Fenced::Done(a2.clone()),
            Fenced::LeaseLost,
            Fenced::NotFound
        ]
    );
    assert_eq!(a2.state, JobState::Completed);
    assert_eq!(a2.result, Some(json!({"ok": true})));
    assert_eq!(a2.finalized_at, Some(t + Duration::from_secs(1)));
    assert_eq!(a2.lease_expires_at, None);
    assert_eq!(
        state_of(&events(&store, a.id).await.last().unwrap().1),
        "completed"
    );
    assert_eq!(
        store.get_job(b.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    // A second completion of the same job is refused: it is no longer running.
    let again = store.complete_jobs(&items[..1], t).await.unwrap().outcome;
    assert_eq!(again, vec![Fenced::LeaseLost]);

    // A job named twice in one batch is completed by the first item holding its lease; a
    // stale item before the right one does not stop it.
    let x = insert(&store, job("c2", t)).await;
    let y = insert(&store, job("c2", t)).await;
    let claimed = claim(&store, "c2", 2, t).await;
    let done = |id: JobId, token: LeaseToken| Completion {
        id,
        lease_token: token,
        result: json!(id.0),
        outside: false,
    };
    let tok = |id: JobId| token_of(&claimed, id);
    let batch = [
        done(x.id, tok(x.id)),
        done(x.id, tok(x.id)),
        done(y.id, "stale".into()),
        done(y.id, tok(y.id)),
    ];
    let answer: Vec<_> = (store.complete_jobs(&batch, t).await.unwrap().outcome)
        .into_iter()
        .map(|f| f.map(|j| j.result))
        .collect();
    assert_eq!(
        answer,
        [
            Fenced::Done(Some(json!(x.id.0))),
            Fenced::LeaseLost,
            Fenced::LeaseLost,
            Fenced::Done(Some(json!(y.id.0)))
        ]
    );
}

pub async fn jobs_completion_from_outside_spares_reserved_queues(store: Arc<dyn Store>) {
    let t = now();
    let own = insert(&store, job("carafe.files", t)).await;
    let app = insert(&store, job("app", t)).await;
    let own_claim = claim(&store, "carafe.files", 1, t).await.remove(0);
    let app_claim = claim(&store, "app", 1, t).await.remove(0);
    let item = |c: &ClaimedJob, outside: bool| Completion {
        id: c.id,
        lease_token: c.lease_token.clone(),
        result: json!("r"),
        outside,
    };
    // From outside, the reserved job is refused even with its lease token, and its
    // neighbour in the same batch completes; nothing is written for the refused one.
    let answer = store
        .complete_jobs(&[item(&own_claim, true), item(&app_claim, true)], t)
        .await
        .unwrap()
        .outcome;
    assert_eq!(answer[0], Fenced::Reserved(q("carafe.files")));
    assert!(
        matches!(&answer[1], Fenced::Done(j) if j.id == app.id && j.state == JobState::Completed)
    );
    let still = store.get_job(own.id).await.unwrap().unwrap();
    assert_eq!(still.state, JobState::Running);
    assert_eq!(still.result, None);
    // A refusal does not depend on the token: a stale one from outside is refused too.
    let mut stale = item(&own_claim, true);
    stale.lease_token = "stale".into();
    assert_eq!(
        store.complete_jobs(&[stale], t).await.unwrap().outcome,
        vec![Fenced::Reserved(q("carafe.files"))]
    );
    // Carafe's own handler completes it.
    let answer = store
        .complete_jobs(&[item(&own_claim, false)], t)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(&answer[0], Fenced::Done(j) if j.id == own.id && j.result == Some(json!("r")))
    );
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
                        lease: super::fixtures::lease(None),
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
            lease: super::fixtures::lease(None),
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
