//! Conformance checks for what keeps workflows whole over time: a step that ends advances its
//! workflow in the same call (nothing is left for a later pass that a crash could skip), the
//! sweep over running workflows reaches every one of them, and retention takes a workflow's
//! steps only with the finished workflow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

use super::flows::{complete_one, finish, sweep};
use super::jobs::{claim, job, q};

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
            lease_token: &cb.lease_token,
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
        lease_token: &c.lease_token,
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
