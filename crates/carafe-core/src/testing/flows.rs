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

/// Completes a claimed job with `result` at `at`; returns the workflow steps that started.
pub(super) async fn complete_one(
    store: &Arc<dyn Store>,
    c: ClaimedJob,
    result: Value,
    at: OffsetDateTime,
) -> Vec<(JobId, QueueName)> {
    let done = Completion {
        id: c.id,
        lease_token: c.lease_token,
        result,
    };
    let answer = store.complete_jobs(&[done], at).await.unwrap();
    assert_eq!(answer.outcome, vec![Fenced::Done(())]);
    answer.started
}

/// Claims one job of `queue` and completes it with `result` at `at`; returns its id and the
/// workflow steps the completion started.
pub(super) async fn finish(
    store: &Arc<dyn Store>,
    queue: &str,
    result: Value,
    at: OffsetDateTime,
) -> (JobId, Vec<(JobId, QueueName)>) {
    let c = claim(store, queue, 1, at).await.remove(0);
    let id = c.id;
    (id, complete_one(store, c, result, at).await)
}

/// Every running workflow visited by the sweep, `page` at a time, and those with a move to
/// make advanced: the steps started.
pub(super) async fn sweep(
    store: &Arc<dyn Store>,
    at: OffsetDateTime,
    page: u32,
) -> Vec<(JobId, QueueName)> {
    let mut after = None;
    let mut started = Vec::new();
    loop {
        let swept = store.stalled_workflows(after, page).await.unwrap();
        for id in swept.stalled {
            started.extend(store.advance_workflow(id, at).await.unwrap());
        }
        match swept.next {
            Some(next) => after = Some(next),
            None => return started,
        }
    }
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

    let (_, started) = finish(&store, "wf-a", json!({"rows": 10}), t).await;
    assert_eq!(
        started,
        vec![(wf.steps[1].id, q("wf-b"))],
        "completing a step starts the next"
    );
    // Sweeping afterwards changes nothing.
    assert!(sweep(&store, t, 100).await.is_empty());
    let b = store.get_job(wf.steps[1].id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Available);
    assert_eq!(b.args, json!({"n": 1, "previous": {"rows": 10}}));

    let (_, started) = finish(&store, "wf-b", json!("b-done"), t).await;
    assert_eq!(started, vec![(wf.steps[2].id, q("wf-c"))]);
    let (_, started) = finish(&store, "wf-c", json!(null), t).await;
    assert!(started.is_empty());
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
    // Both members finish at the same moment; whichever completion commits last starts the
    // callback, once.
    let done = |i: usize| {
        vec![Completion {
            id: claimed[i].id,
            lease_token: claimed[i].lease_token.clone(),
            result: json!(i),
        }]
    };
    let (first, second) = (done(0), done(1));
    let (x, y) = tokio::join!(
        store.complete_jobs(&first, t),
        store.complete_jobs(&second, t)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        (x.outcome, y.outcome),
        (vec![Fenced::Done(())], vec![Fenced::Done(())])
    );
    assert_eq!(
        [x.started, y.started].concat(),
        vec![(wf.steps[2].id, q("gather"))],
        "the callback is started exactly once"
    );
    let callback = store.get_job(wf.steps[2].id).await.unwrap().unwrap();
    assert_eq!(callback.state, JobState::Available);
    let expected = if claimed[0].id == wf.steps[0].id {
        json!([0, 1])
    } else {
        json!([1, 0])
    };
    assert_eq!(callback.args["results"], expected, "results in step order");
    let (_, started) = finish(&store, "gather", json!("all"), t).await;
    assert!(started.is_empty());
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
    let failed = store.fail_job(f).await.unwrap();
    assert!(failed.started.is_empty());
    // The discard failed the workflow in the same call.
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
    let g = store.get_workflow(g.id).await.unwrap().unwrap();
    assert_eq!(g.state, WorkflowState::Cancelled);
    let member = store.get_job(running.id).await.unwrap().unwrap();
    assert!(member.cancel_requested);
}
