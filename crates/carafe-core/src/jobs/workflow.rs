//! Workflows: a chain (each step gets the previous step's result), a group (steps run side by
//! side), and a group with a callback (a chord: the callback gets every result, runs once, and
//! only if every member succeeded). Every step is a job from the start; steps that must wait
//! are `pending` until the workflow activates them.
//!
//! `plan` decides, from the steps' states alone, what should happen next. Stores call it with
//! the workflow's row locked, in the very transaction in which a step reaches a final state, so
//! no crash can separate a step's end from the workflow's next move; advancing is idempotent
//! and a callback is activated exactly once. (Maintenance also sweeps every running workflow,
//! for advances that older versions, which advanced in a second transaction, left undone.)

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{Job, JobId, JobState, QueueName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(pub i64);

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkflowId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(WorkflowId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    Chain,
    Group,
    /// A group whose last step is the callback.
    Chord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    Running,
    Completed,
    /// A step was discarded.
    Failed,
    /// A step was cancelled.
    Cancelled,
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok(Self::$v),)* other => Err(format!("unknown value `{other}`")) }
            }
        }
    };
}

names!(WorkflowKind { Chain => "chain", Group => "group", Chord => "chord" });

impl WorkflowKind {
    /// Whether step `i` of `len` waits (`pending`) when the workflow is created: every chain
    /// step after the first, and a chord's callback (its last step).
    pub fn waits(self, i: usize, len: usize) -> bool {
        match self {
            WorkflowKind::Chain => i > 0,
            WorkflowKind::Group => false,
            WorkflowKind::Chord => i + 1 == len,
        }
    }
}
names!(WorkflowState { Running => "running", Completed => "completed", Failed => "failed", Cancelled => "cancelled" });

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub id: WorkflowId,
    pub kind: WorkflowKind,
    pub state: WorkflowState,
    pub created_at: OffsetDateTime,
    pub finalized_at: Option<OffsetDateTime>,
    /// The steps, in order (a chord's callback last).
    pub steps: Vec<Job>,
}

/// The answer of a store write that may end workflow steps, with the steps that the advance
/// of their workflows (in the same transaction) started, so the caller can wake their queues.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced<T> {
    /// What the write itself answers.
    pub outcome: T,
    /// Steps started (a chain's next step, a chord's callback): their ids and queues.
    pub started: Vec<(JobId, QueueName)>,
}

impl<T> Advanced<T> {
    /// An answer that started nothing.
    pub fn alone(outcome: T) -> Self {
        Advanced {
            outcome,
            started: Vec::new(),
        }
    }
}

/// What a step looks like to `plan`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub job: JobId,
    pub state: JobState,
    pub result: Option<Value>,
}

/// What should happen next in a workflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Pending steps to start, each with a member to add to its `args`
    /// (`previous` for a chain step, `results` for a chord's callback).
    pub activate: Vec<(JobId, &'static str, Value)>,
    /// Steps to stop: waiting ones are cancelled, running ones asked to stop.
    pub cancel: Vec<JobId>,
    /// The workflow's final state, when it has one now.
    pub finish: Option<WorkflowState>,
}

fn failure(state: JobState) -> Option<WorkflowState> {
    match state {
        JobState::Discarded => Some(WorkflowState::Failed),
        JobState::Cancelled => Some(WorkflowState::Cancelled),
        _ => None,
    }
}

/// Decides the next moves of a running workflow from its steps (in order).
pub fn plan(kind: WorkflowKind, steps: &[Step]) -> Plan {
    let mut plan = Plan::default();
    let unfinished = |s: &&Step| !s.state.is_final();
    match kind {
        WorkflowKind::Chain => {
            let mut previous = Value::Null;
            for (i, step) in steps.iter().enumerate() {
                match step.state {
                    JobState::Completed => previous = step.result.clone().unwrap_or(Value::Null),
                    JobState::Pending => {
                        plan.activate.push((step.job, "previous", previous));
                        return plan;
                    }
                    state => {
                        if let Some(end) = failure(state) {
                            plan.finish = Some(end);
                            plan.cancel = steps[i + 1..]
                                .iter()
                                .filter(unfinished)
                                .map(|s| s.job)
                                .collect();
                        }
                        return plan;
                    }
                }
            }
            plan.finish = Some(WorkflowState::Completed);
        }
        WorkflowKind::Group | WorkflowKind::Chord => {
            let (members, callback) = match kind {
                WorkflowKind::Chord => steps.split_at(steps.len().saturating_sub(1)),
                _ => (steps, &[][..]),
            };
            let ended = members
                .iter()
                .filter_map(|s| failure(s.state))
                .collect::<Vec<_>>();
            if !ended.is_empty() {
                // Any discarded step fails the workflow; only cancellations cancel it.
                plan.finish = Some(if ended.contains(&WorkflowState::Failed) {
                    WorkflowState::Failed
                } else {
                    WorkflowState::Cancelled
                });
                plan.cancel = steps.iter().filter(unfinished).map(|s| s.job).collect();
                return plan;
            }
            if !members.iter().all(|s| s.state == JobState::Completed) {
                return plan;
            }
            match callback.first() {
                None => plan.finish = Some(WorkflowState::Completed),
                Some(cb) if cb.state == JobState::Pending => {
                    let results = members
                        .iter()
                        .map(|s| s.result.clone().unwrap_or(Value::Null))
                        .collect();
                    plan.activate
                        .push((cb.job, "results", Value::Array(results)));
                }
                Some(cb) if cb.state == JobState::Completed => {
                    plan.finish = Some(WorkflowState::Completed)
                }
                Some(cb) => plan.finish = failure(cb.state),
            }
        }
    }
    plan
}

/// Of a page of running workflows (id and kind) and their steps (workflow, job and state, in
/// step order), those `plan` would move now. The sweep reads states without locking anything
/// and locks only these: a step's result changes what an advance writes, never whether it has
/// something to do.
pub fn needing_advance(
    workflows: &[(WorkflowId, WorkflowKind)],
    steps: &[(WorkflowId, JobId, JobState)],
) -> Vec<WorkflowId> {
    let mut by_workflow: HashMap<WorkflowId, Vec<Step>> = HashMap::new();
    for &(workflow, job, state) in steps {
        by_workflow.entry(workflow).or_default().push(Step {
            job,
            state,
            result: None,
        });
    }
    workflows
        .iter()
        .filter(|(id, kind)| {
            let steps = by_workflow.get(id).map_or(&[][..], Vec::as_slice);
            plan(*kind, steps) != Plan::default()
        })
        .map(|(id, _)| *id)
        .collect()
}

/// One page of the sweep over running workflows, from the rows a store read: the page's
/// workflows (`id`, `kind`, in id order, at most `batch`) and their steps (`workflow_id`,
/// `id`, `state`, in step order).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPage {
    /// The workflows that need an advance.
    pub stalled: Vec<WorkflowId>,
    /// Where the next page starts (`after`), `None` after the last.
    pub next: Option<WorkflowId>,
}

impl SweepPage {
    /// A row that does not parse is named in the error.
    pub fn from_rows(
        workflows: &[(i64, String)],
        steps: &[(i64, i64, String)],
        batch: u32,
    ) -> Result<Self, String> {
        let next = match workflows.last() {
            Some((last, _)) if workflows.len() as u64 >= u64::from(batch) => {
                Some(WorkflowId(*last))
            }
            _ => None,
        };
        let workflows = workflows
            .iter()
            .map(|(id, kind)| Ok((WorkflowId(*id), kind.parse()?)))
            .collect::<Result<Vec<(WorkflowId, WorkflowKind)>, String>>()?;
        let steps = steps
            .iter()
            .map(|(w, j, state)| Ok((WorkflowId(*w), JobId(*j), state.parse()?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SweepPage {
            stalled: needing_advance(&workflows, &steps),
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(id: i64, state: JobState, result: Option<Value>) -> Step {
        Step {
            job: JobId(id),
            state,
            result,
        }
    }

    #[test]
    fn a_chain_passes_each_result_on_and_stops_at_a_failure() {
        use JobState::*;
        let s = [
            step(1, Completed, Some(json!(10))),
            step(2, Pending, None),
            step(3, Pending, None),
        ];
        assert_eq!(
            plan(WorkflowKind::Chain, &s).activate,
            vec![(JobId(2), "previous", json!(10))]
        );
        let s = [step(1, Running, None), step(2, Pending, None)];
        assert_eq!(
            plan(WorkflowKind::Chain, &s),
            Plan::default(),
            "wait for the running step"
        );
        let s = [
            step(1, Completed, Some(json!(1))),
            step(2, Discarded, None),
            step(3, Pending, None),
        ];
        let p = plan(WorkflowKind::Chain, &s);
        assert_eq!(
            (p.finish, p.cancel),
            (Some(WorkflowState::Failed), vec![JobId(3)])
        );
        let s = [
            step(1, Completed, Some(json!(1))),
            step(2, Completed, Some(json!(2))),
        ];
        assert_eq!(
            plan(WorkflowKind::Chain, &s).finish,
            Some(WorkflowState::Completed)
        );
    }

    #[test]
    fn a_chord_calls_back_once_everyone_succeeded() {
        use JobState::*;
        let s = [
            step(1, Completed, Some(json!("a"))),
            step(2, Running, None),
            step(3, Pending, None),
        ];
        assert_eq!(plan(WorkflowKind::Chord, &s), Plan::default());
        let s = [
            step(1, Completed, Some(json!("a"))),
            step(2, Completed, Some(json!("b"))),
            step(3, Pending, None),
        ];
        assert_eq!(
            plan(WorkflowKind::Chord, &s).activate,
            vec![(JobId(3), "results", json!(["a", "b"]))]
        );
        let s = [
            step(1, Completed, None),
            step(2, Completed, None),
            step(3, Completed, Some(json!(1))),
        ];
        assert_eq!(
            plan(WorkflowKind::Chord, &s).finish,
            Some(WorkflowState::Completed)
        );
        let s = [
            step(1, Discarded, None),
            step(2, Running, None),
            step(3, Pending, None),
        ];
        let p = plan(WorkflowKind::Chord, &s);
        assert_eq!(p.finish, Some(WorkflowState::Failed));
        assert_eq!(
            p.cancel,
            vec![JobId(2), JobId(3)],
            "the rest stop; the callback never runs"
        );
        assert!(p.activate.is_empty());
        let s = [step(1, Completed, None), step(2, Cancelled, None)];
        assert_eq!(
            plan(WorkflowKind::Group, &s).finish,
            Some(WorkflowState::Cancelled)
        );
        let s = [step(1, Completed, None), step(2, Completed, None)];
        assert_eq!(
            plan(WorkflowKind::Group, &s).finish,
            Some(WorkflowState::Completed)
        );
    }

    #[test]
    fn only_workflows_with_a_move_to_make_need_an_advance() {
        use JobState::*;
        let (w1, w2, w3) = (WorkflowId(1), WorkflowId(2), WorkflowId(3));
        let workflows = [
            (w1, WorkflowKind::Chain),
            (w2, WorkflowKind::Chord),
            (w3, WorkflowKind::Group),
        ];
        let steps = [
            // A chain whose first step completed but whose second still waits: stuck.
            (w1, JobId(1), Completed),
            (w1, JobId(2), Pending),
            // A chord still running a member: nothing to do.
            (w2, JobId(3), Completed),
            (w2, JobId(4), Running),
            (w2, JobId(5), Pending),
            // A group whose members all ended, never finished: stuck.
            (w3, JobId(6), Completed),
        ];
        assert_eq!(needing_advance(&workflows, &steps), vec![w1, w3]);
        assert!(needing_advance(&workflows[1..2], &steps).is_empty());
    }
}
