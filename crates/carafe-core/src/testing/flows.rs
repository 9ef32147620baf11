//! Conformance checks for schedules and workflows.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::jobs::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

use super::jobs::{claim, job, q};

fn schedule(name: &str, next: OffsetDateTime) -> Schedule {
    let t = now();
    Schedule {
        name: name.into(),
        cron: "0 9 * * *".into(),
        timezone: "Asia/Seoul".into(),
        job: json!({"queue": "reports", "args": {"kind": "daily"}}),
        paused: false,
        next_fire_at: next,
        last_fire_at: None,
        last_job_id: None,
        created_at: t,
        updated_at: t,
    }
}

pub async fn schedules_are_stored_listed_and_fired_once(store: Arc<dyn Store>) {
    let t = now();
    let daily = schedule("daily-report", t - Duration::from_secs(5));
    assert!(store.put_schedule(daily.clone()).await.unwrap(), "created");
    assert_eq!(
        store.get_schedule("daily-report").await.unwrap(),
        Some(daily.clone())
    );
    let mut later = schedule("later", t + Duration::from_secs(3600));
    assert!(store.put_schedule(later.clone()).await.unwrap());
    let mut paused = schedule("paused", t - Duration::from_secs(5));
    paused.paused = true;
    store.put_schedule(paused).await.unwrap();

    let due = store.due_schedules(t, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["daily-report"]
    );
    let next = t + Duration::from_secs(86_400);
    let fired = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(42)), next)
        .await
        .unwrap();
    assert!(fired);
    // A second leader that read the same tick changes nothing.
    let again = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(43)), next)
        .await
        .unwrap();
    assert!(!again);
    let saved = store.get_schedule("daily-report").await.unwrap().unwrap();
    assert_eq!(
        (saved.next_fire_at, saved.last_fire_at, saved.last_job_id),
        (next, Some(t), Some(JobId(42)))
    );
    assert!(store.due_schedules(t, 10).await.unwrap().is_empty());

    // Replacing keeps the creation time and the history; it is not "created".
    let created = later.created_at;
    later.cron = "*/5 * * * *".into();
    later.created_at = t + Duration::from_secs(99);
    assert!(!store.put_schedule(later.clone()).await.unwrap());
    let saved = store.get_schedule("later").await.unwrap().unwrap();
    assert_eq!(
        (saved.cron.as_str(), saved.created_at),
        ("*/5 * * * *", created)
    );

    let first = store.list_schedules(&PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = first.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["daily-report", "later"]);
    let rest = store
        .list_schedules(&PageRequest {
            after: first.next_after.clone(),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["paused"]
    );
    assert!(store.delete_schedule("later").await.unwrap());
    assert!(!store.delete_schedule("later").await.unwrap());
    assert_eq!(store.get_schedule("later").await.unwrap(), None);
}

async fn finish(store: &Arc<dyn Store>, queue: &str, result: Value, at: OffsetDateTime) -> JobId {
    let c = claim(store, queue, 1, at).await.remove(0);
    let done = Completion {
        id: c.id,
        lease_token: c.lease_token,
        result,
    };
    assert_eq!(
        store.complete_jobs(&[done], at).await.unwrap(),
        vec![Fenced::Done(())]
    );
    c.id
}

pub async fn workflows_chain_pass_results_along(store: Arc<dyn Store>) {
    let t = now();
    let steps = vec![job("wf-a", t), job("wf-b", t), job("wf-c", t)];
    let wf = store
        .create_workflow(WorkflowKind::Chain, steps, t)
        .await
        .unwrap();
    assert_eq!(
        (wf.kind, wf.state),
        (WorkflowKind::Chain, WorkflowState::Running)
    );
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [JobState::Available, JobState::Pending, JobState::Pending]
    );
    assert_eq!(wf.steps[1].workflow, Some((wf.id, 1)));
    assert!(
        claim(&store, "wf-b", 10, t).await.is_empty(),
        "pending steps are never claimed"
    );

    let a = finish(&store, "wf-a", json!({"rows": 10}), t).await;
    let started = store.advance_workflows(&[a], t).await.unwrap();
    assert_eq!(started, vec![(wf.steps[1].id, q("wf-b"))]);
    // Advancing again changes nothing.
    assert!(store.advance_workflows(&[a], t).await.unwrap().is_empty());
    let b = store.get_job(wf.steps[1].id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Available);
    assert_eq!(b.args, json!({"n": 1, "previous": {"rows": 10}}));

    let b = finish(&store, "wf-b", json!("b-done"), t).await;
    store.advance_workflows(&[b], t).await.unwrap();
    let c = finish(&store, "wf-c", json!(null), t).await;
    assert!(store.advance_workflows(&[c], t).await.unwrap().is_empty());
    let wf = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Completed);
    assert!(wf.finalized_at.is_some());
    assert_eq!(wf.steps[2].args["previous"], json!("b-done"));
    assert_eq!(
        store.get_workflow(WorkflowId(wf.id.0 + 999)).await.unwrap(),
        None
    );
}

pub async fn workflows_chords_call_back_once(store: Arc<dyn Store>) {
    let t = now();
    let steps = vec![job("fan", t), job("fan", t), job("gather", t)];
    let wf = store
        .create_workflow(WorkflowKind::Chord, steps, t)
        .await
        .unwrap();
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [JobState::Available, JobState::Available, JobState::Pending]
    );
    let claimed = claim(&store, "fan", 2, t).await;
    // Both members finish; whichever advance runs, the callback starts once.
    for (i, c) in claimed.iter().enumerate() {
        let done = Completion {
            id: c.id,
            lease_token: c.lease_token.clone(),
            result: json!(i),
        };
        store.complete_jobs(&[done], t).await.unwrap();
    }
    let ids: Vec<_> = claimed.iter().map(|c| c.id).collect();
    let (x, y) = tokio::join!(
        store.advance_workflows(&ids[..1], t),
        store.advance_workflows(&ids[1..], t)
    );
    assert_eq!(
        x.unwrap().len() + y.unwrap().len(),
        1,
        "the callback is started exactly once"
    );
    let callback = store.get_job(wf.steps[2].id).await.unwrap().unwrap();
    assert_eq!(callback.state, JobState::Available);
    let first = if claimed[0].id == wf.steps[0].id {
        0
    } else {
        1
    };
    let expected = if first == 0 {
        json!([0, 1])
    } else {
        json!([1, 0])
    };
    assert_eq!(callback.args["results"], expected, "results in step order");
    let cb = finish(&store, "gather", json!("all"), t).await;
    store.advance_workflows(&[cb], t).await.unwrap();
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().unwrap().state,
        WorkflowState::Completed
    );
}

pub async fn workflows_stop_at_a_failed_step(store: Arc<dyn Store>) {
    let t = now();
    let mut first = job("fails", t);
    first.max_attempts = 1;
    let wf = store
        .create_workflow(
            WorkflowKind::Chain,
            vec![first, job("never", t), job("never", t)],
            t,
        )
        .await
        .unwrap();
    let c = claim(&store, "fails", 1, t).await.remove(0);
    let f = Failure {
        id: c.id,
        lease_token: &c.lease_token,
        message: "bad".into(),
        retry: RetryRequest::Default,
        now: t,
    };
    store.fail_job(f).await.unwrap();
    assert!(
        store
            .advance_workflows(&[c.id], t)
            .await
            .unwrap()
            .is_empty()
    );
    let wf = store.get_workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(wf.state, WorkflowState::Failed);
    let states: Vec<_> = wf.steps.iter().map(|j| j.state).collect();
    assert_eq!(
        states,
        [
            JobState::Discarded,
            JobState::Cancelled,
            JobState::Cancelled
        ]
    );

    // A group with one member cancelled: the running member is asked to stop.
    let g = store
        .create_workflow(WorkflowKind::Group, vec![job("g1", t), job("g2", t)], t)
        .await
        .unwrap();
    let running = claim(&store, "g1", 1, t).await.remove(0);
    store.cancel_job(g.steps[1].id, t).await.unwrap();
    store.advance_workflows(&[g.steps[1].id], t).await.unwrap();
    let g = store.get_workflow(g.id).await.unwrap().unwrap();
    assert_eq!(g.state, WorkflowState::Cancelled);
    let member = store.get_job(running.id).await.unwrap().unwrap();
    assert!(member.cancel_requested);
}

pub async fn workflows_are_swept_after_a_crash(store: Arc<dyn Store>) {
    let t = now();
    let wf = store
        .create_workflow(WorkflowKind::Chain, vec![job("s1", t), job("s2", t)], t)
        .await
        .unwrap();
    // The step completes, but the process dies before advancing the workflow.
    finish(&store, "s1", json!(7), t).await;
    let started = store.advance_running_workflows(t, 100).await.unwrap();
    assert_eq!(started, vec![(wf.steps[1].id, q("s2"))]);
    finish(&store, "s2", json!(8), t).await;
    store.advance_running_workflows(t, 100).await.unwrap();
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().unwrap().state,
        WorkflowState::Completed
    );
    assert!(
        store
            .advance_running_workflows(t, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
