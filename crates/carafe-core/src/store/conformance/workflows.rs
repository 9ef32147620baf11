//! Conformance checks for `WorkflowStore`: chains pass results along, chords call back once, a
//! failed step stops its workflow; and what keeps workflows whole over time: a step that ends
//! advances its workflow in the same call (nothing is left for a later pass that a crash could
//! skip), the sweep over running workflows reaches every one of them, and retention takes a
//! workflow's steps only with the finished workflow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::fixtures::{claim, job, q};
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

/// Completes a claimed job with `result` at `at`; returns the workflow steps that started.
async fn complete_one(
    store: &Arc<dyn Store>,
    c: ClaimedJob,
    result: Value,
    at: OffsetDateTime,
) -> Vec<(JobId, QueueName)> {
    let done = Completion {
        id: c.id,
        lease_token: c.lease_token,
        result,
        outside: false,
    };
    let answer = store.complete_jobs(&[done], at).await.unwrap();
    assert!(matches!(answer.outcome[..], [Fenced::Done(ref j)] if j.state == JobState::Completed));
    answer.started
}

/// Claims one job of `queue` and completes it with `result` at `at`; returns its id and the
/// workflow steps the completion started.
async fn finish(
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
async fn sweep(store: &Arc<dyn Store>, at: OffsetDateTime, page: u32) -> Vec<(JobId, QueueName)> {
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
            outside: false,
        }]
    };
    let (first, second) = (done(0), done(1));
    let (x, y) = tokio::join!(
        store.complete_jobs(&first, t),
        store.complete_jobs(&second, t)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.outcome.iter().chain(&y.outcome).all(Fenced::is_done));
    assert_eq!((x.outcome.len(), y.outcome.len()), (1, 1));
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
        lease_token: c.lease_token.clone(),
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

/// Runs one SQL statement on the store's database behind the store's back, for checks that
/// need a state only an older version of Carafe could leave.
pub type RawSql = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

const DAY: Duration = Duration::from_secs(86_400);

async fn chain(store: &Arc<dyn Store>, queues: &[&str], at: OffsetDateTime) -> Workflow {
    let steps = queues.iter().map(|name| job(name, at)).collect();
    store
        .create_workflow(WorkflowKind::Chain, steps, at)
        .await
        .unwrap()
}

async fn state(store: &Arc<dyn Store>, id: JobId) -> JobState {
    store.get_job(id).await.unwrap().unwrap().state
}

async fn workflow_state(store: &Arc<dyn Store>, id: WorkflowId) -> WorkflowState {
    store.get_workflow(id).await.unwrap().unwrap().state
}

pub async fn workflows_advance_with_the_step_that_ends(store: Arc<dyn Store>) {
    let t = now();
    // Older running workflows, more than one page of the sweep below.
    for _ in 0..4 {
        chain(&store, &["older", "older-next"], t).await;
    }
    let newest = chain(&store, &["newest-a", "newest-b", "newest-c"], t).await;

    // Only the store's completion runs, as if the process died right after it returned.
    let (_, started) = finish(&store, "newest-a", json!({"rows": 3}), t).await;
    assert_eq!(started, vec![(newest.steps[1].id, q("newest-b"))]);
    let b = store.get_job(newest.steps[1].id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Available);
    assert_eq!(b.args["previous"], json!({"rows": 3}));
    // The sweep's first page holds only older workflows: it was never needed here.
    let page = store.stalled_workflows(None, 2).await.unwrap();
    assert!(page.stalled.is_empty());
    assert!(page.next.is_some(), "more pages follow");

    // A discarded step fails its workflow in the same call, cancelling the rest.
    let cb = claim(&store, "newest-b", 1, t).await.remove(0);
    let failed = store
        .fail_job(Failure {
            id: cb.id,
            lease_token: cb.lease_token.clone(),
            message: "bad input".into(),
            retry: RetryRequest::Never,
            now: t,
        })
        .await
        .unwrap();
    assert!(matches!(failed.outcome, Fenced::Done(o) if o.state == JobState::Discarded));
    assert_eq!(
        workflow_state(&store, newest.id).await,
        WorkflowState::Failed
    );
    assert_eq!(state(&store, newest.steps[2].id).await, JobState::Cancelled);

    // A rescue that discards a step (its last attempt's lease ran out) fails the workflow too.
    let mut last = job("lapse", t);
    last.max_attempts = 1;
    let lapsing = store
        .create_workflow(WorkflowKind::Chain, vec![last, job("lapse-next", t)], t)
        .await
        .unwrap();
    let c = claim(&store, "lapse", 1, t).await.remove(0);
    let rescued = store
        .rescue_expired_jobs(t + Duration::from_secs(60), 100)
        .await
        .unwrap();
    assert_eq!(rescued.outcome, vec![c.id]);
    assert_eq!(state(&store, c.id).await, JobState::Discarded);
    assert_eq!(
        workflow_state(&store, lapsing.id).await,
        WorkflowState::Failed
    );
    assert_eq!(
        state(&store, lapsing.steps[1].id).await,
        JobState::Cancelled
    );

    // Cancelling a waiting chord member cancels the workflow at once; the callback never runs.
    let chord = store
        .create_workflow(
            WorkflowKind::Chord,
            vec![job("m1", t), job("m2", t), job("m-cb", t)],
            t,
        )
        .await
        .unwrap();
    let (_, started) = finish(&store, "m1", json!(1), t).await;
    assert!(started.is_empty());
    let cancelled = store.cancel_job(chord.steps[1].id, t).await.unwrap();
    assert!(cancelled.started.is_empty());
    assert_eq!(
        workflow_state(&store, chord.id).await,
        WorkflowState::Cancelled
    );
    assert_eq!(state(&store, chord.steps[2].id).await, JobState::Cancelled);
    assert!(
        sweep(&store, t, 2).await.is_empty(),
        "nothing was left over"
    );
}

/// The sweep pages through every running workflow: one stuck behind a full first page (as an
/// older version could leave it, its step ended and the advance lost) is advanced.
pub async fn workflows_sweep_reaches_every_running_workflow(store: Arc<dyn Store>, raw: RawSql) {
    let t = now();
    let mut chains = Vec::new();
    for _ in 0..5 {
        chains.push(chain(&store, &["sweep-a", "sweep-b"], t).await);
    }
    let stuck = chains.last().unwrap();
    raw(format!(
        "UPDATE jobs SET state = 'completed', result = '7', finalized_at = created_at \
         WHERE id = {}",
        stuck.steps[0].id
    ))
    .await;
    assert_eq!(state(&store, stuck.steps[1].id).await, JobState::Pending);

    let first = store.stalled_workflows(None, 2).await.unwrap();
    assert_eq!(
        (first.stalled, first.next),
        (vec![], Some(chains[1].id)),
        "the stuck workflow is not on the first page"
    );
    let last = store
        .stalled_workflows(Some(chains[3].id), 2)
        .await
        .unwrap();
    assert_eq!(
        (last.stalled, last.next),
        (vec![stuck.id], None),
        "the last page holds it, and says it is the last"
    );
    assert_eq!(
        sweep(&store, t, 2).await,
        vec![(stuck.steps[1].id, q("sweep-b"))]
    );
    let next = store.get_job(stuck.steps[1].id).await.unwrap().unwrap();
    assert_eq!(next.state, JobState::Available);
    assert_eq!(next.args["previous"], json!(7));
    assert!(sweep(&store, t, 2).await.is_empty(), "nothing is left");
    assert!(
        store
            .advance_workflow(stuck.id, t)
            .await
            .unwrap()
            .is_empty(),
        "advancing is idempotent"
    );
}

pub async fn workflows_keep_their_steps_until_they_finish(store: Arc<dyn Store>) {
    let t = now();
    let far = t + 30 * DAY;
    let wf = store
        .create_workflow(
            WorkflowKind::Chord,
            vec![job("keep-a", t), job("keep-b", t), job("keep-cb", t)],
            t,
        )
        .await
        .unwrap();
    let (a, _) = finish(&store, "keep-a", json!("a"), t).await;
    let b = claim(&store, "keep-b", 1, t).await.remove(0);

    // Retention far past the first member's end, while the workflow runs: nothing goes.
    assert_eq!(store.prune_jobs(far, far, 100).await.unwrap(), 0);
    assert_eq!(store.prune_workflows(far, far, 100).await.unwrap(), 0);
    assert_eq!(state(&store, a).await, JobState::Completed);
    assert!(!store.job_events(a, 0, 10).await.unwrap().is_empty());

    // The other member ends days later: the callback gets every member's result.
    let later = t + 10 * DAY;
    let done = Completion {
        id: b.id,
        lease_token: b.lease_token,
        result: json!("b"),
        outside: false,
    };
    let answer = store.complete_jobs(&[done], later).await.unwrap();
    assert_eq!(answer.started, vec![(wf.steps[2].id, q("keep-cb"))]);
    let callback = claim(&store, "keep-cb", 1, later).await.remove(0);
    assert_eq!(callback.args["results"], json!(["a", "b"]));
    assert!(
        complete_one(&store, callback, json!("all"), later)
            .await
            .is_empty()
    );
    assert_eq!(
        workflow_state(&store, wf.id).await,
        WorkflowState::Completed
    );

    // Finished, but not yet past its retention: kept (a failed workflow's is the longer one).
    assert_eq!(store.prune_workflows(later, far, 100).await.unwrap(), 0);
    assert_eq!(store.prune_jobs(far, far, 100).await.unwrap(), 0);
    assert_eq!(store.prune_workflows(far, later, 100).await.unwrap(), 1);
    assert_eq!(store.get_workflow(wf.id).await.unwrap(), None);
    for step in &wf.steps {
        assert_eq!(
            store.get_job(step.id).await.unwrap(),
            None,
            "steps go with it"
        );
        assert!(store.job_events(step.id, 0, 10).await.unwrap().is_empty());
    }

    // A failed workflow is kept as long as discarded jobs; a cancelled one as completed ones.
    let mut doomed = job("doomed", t);
    doomed.max_attempts = 1;
    let failed = store
        .create_workflow(WorkflowKind::Chain, vec![doomed, job("doomed-next", t)], t)
        .await
        .unwrap();
    let c = claim(&store, "doomed", 1, t).await.remove(0);
    let f = Failure {
        id: c.id,
        lease_token: c.lease_token.clone(),
        message: "no".into(),
        retry: RetryRequest::Never,
        now: t,
    };
    store.fail_job(f).await.unwrap();
    let cancelled = chain(&store, &["called-off", "called-off-next"], t).await;
    store.cancel_job(cancelled.steps[0].id, t).await.unwrap();
    let cut = t + Duration::from_secs(1);
    assert_eq!(store.prune_workflows(cut, t, 100).await.unwrap(), 1);
    assert_eq!(store.get_workflow(cancelled.id).await.unwrap(), None);
    assert!(store.get_workflow(failed.id).await.unwrap().is_some());
    assert_eq!(store.prune_workflows(t, cut, 1).await.unwrap(), 1);
    assert_eq!(store.get_workflow(failed.id).await.unwrap(), None);
    assert_eq!(store.get_job(c.id).await.unwrap(), None);

    // Batches are bounded.
    for _ in 0..3 {
        let wf = chain(&store, &["batch"], t).await;
        finish(&store, "batch", json!(null), t).await;
        assert_eq!(
            workflow_state(&store, wf.id).await,
            WorkflowState::Completed
        );
    }
    assert_eq!(store.prune_workflows(far, far, 2).await.unwrap(), 2);
    assert_eq!(store.prune_workflows(far, far, 2).await.unwrap(), 1);
    assert_eq!(store.prune_workflows(far, far, 2).await.unwrap(), 0);
}
