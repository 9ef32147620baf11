//! Workflows (chains, groups, chords) of jobs, and the sweep and retention that keep them whole.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::jobs::{JobId, NewJob, QueueName, SweepPage, Workflow, WorkflowId, WorkflowKind};

/// Workflows of jobs (see `carafe_core::jobs::plan`). Every step is inserted when the workflow
/// is created. A workflow is advanced inside the transaction that ends one of its steps (see
/// `JobStore`), with the workflow locked, so concurrent step completions cannot both miss (or
/// both start) the next step, and no crash can come between a step's end and the advance.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Creates a workflow and its steps in one transaction. A chain's first step and a
    /// group's members start as their `NewJob` says; later chain steps and a chord's callback
    /// (the last step) are `pending`.
    async fn create_workflow(
        &self,
        kind: WorkflowKind,
        steps: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<Workflow>;
    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<Workflow>>;
    /// One page of the sweep that finishes advances left undone by older versions (which
    /// advanced in a second transaction, after the step's): up to `batch` running workflows
    /// with ids above `after`, in id order, read without locks; which of them need an advance,
    /// and the `after` of the next page.
    async fn stalled_workflows(
        &self,
        after: Option<WorkflowId>,
        batch: u32,
    ) -> StoreResult<SweepPage>;
    /// Advances one workflow (if running), locked, in a transaction of its own; returns the
    /// steps it started.
    async fn advance_workflow(
        &self,
        id: WorkflowId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(JobId, QueueName)>>;
    /// Deletes up to `batch` finished workflows past their retention — completed and cancelled
    /// ones finalized before `finished_before`, failed ones before `discarded_before` — with
    /// every step and the steps' events, once no step is unfinished or finalized after that
    /// cut-off. Returns how many workflows went.
    async fn prune_workflows(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64>;
}
