//! Starting workflows: chains (each step gets the previous step's result in `args.previous`),
//! groups, and groups with a callback (a chord: the callback gets every member's result in
//! `args.results`, and runs once, only if all succeeded). The store inserts every step at once
//! and advances the workflow in the transaction that ends each step; this module checks the
//! steps and starts the workflow.

use carafe_core::jobs::{NewJob, Workflow, WorkflowId, WorkflowKind};
use time::OffsetDateTime;

use super::request::{self, EnqueueJob};
use super::{Error, Jobs, queue_topic};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 100;

/// A workflow as asked for.
#[derive(Debug)]
pub enum Shape {
    Chain(Vec<EnqueueJob>),
    /// A group; with a callback (`then`), a chord.
    Group {
        members: Vec<EnqueueJob>,
        then: Option<Box<EnqueueJob>>,
    },
}

impl Shape {
    /// The shape `{chain}`, `{group}` or `{group, then}` describe.
    pub fn new(
        chain: Option<Vec<EnqueueJob>>,
        group: Option<Vec<EnqueueJob>>,
        then: Option<EnqueueJob>,
    ) -> Result<Shape, Error> {
        let bounded = |name: &str, n: usize| {
            if (1..=MAX_STEPS).contains(&n) {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("/{name}"),
                    format!("give 1 to {MAX_STEPS} steps"),
                ))
            }
        };
        match (chain, group, then) {
            (Some(chain), None, None) => {
                bounded("chain", chain.len())?;
                Ok(Shape::Chain(chain))
            }
            (None, Some(members), then) => {
                bounded("group", members.len())?;
                let then = then.map(Box::new);
                Ok(Shape::Group { members, then })
            }
            (Some(_), Some(_), _) => Err(Error::invalid("/group", "give chain or group, not both")),
            (Some(_), None, Some(_)) => Err(Error::invalid("/then", "then goes with a group")),
            (None, None, _) => Err(Error::invalid("/", "give a chain or a group")),
        }
    }

    /// The workflow's kind and its steps: each with its JSON pointer and whether it waits
    /// for others.
    fn steps(self) -> (WorkflowKind, Vec<(String, EnqueueJob, bool)>) {
        match self {
            Shape::Chain(chain) => {
                let list = chain
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (format!("/chain/{i}"), s, i > 0))
                    .collect();
                (WorkflowKind::Chain, list)
            }
            Shape::Group { members, then } => {
                let mut list: Vec<_> = members
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (format!("/group/{i}"), s, false))
                    .collect();
                let kind = match then {
                    Some(cb) => {
                        list.push(("/then".to_owned(), *cb, true));
                        WorkflowKind::Chord
                    }
                    None => WorkflowKind::Group,
                };
                (kind, list)
            }
        }
    }
}

impl Jobs {
    /// Checks the steps (a step that waits for others may not set its own timing; no step may
    /// have a unique key), stores the workflow, and wakes the queues of the steps that start.
    pub async fn start_workflow(
        &self,
        shape: Shape,
        at: OffsetDateTime,
    ) -> Result<Workflow, Error> {
        let (kind, list) = shape.steps();
        let steps = self.workflow_steps(list, at).await?;
        let wf = self.store().create_workflow(kind, steps, at).await?;
        for step in &wf.steps {
            self.bus().publish(&queue_topic(step.queue.as_str()));
        }
        Ok(wf)
    }

    pub async fn workflow(&self, id: WorkflowId) -> Result<Workflow, Error> {
        self.store().get_workflow(id).await?.ok_or(Error::NotFound)
    }

    async fn workflow_steps(
        &self,
        list: Vec<(String, EnqueueJob, bool)>,
        at: OffsetDateTime,
    ) -> Result<Vec<NewJob>, Error> {
        let mut problems = Vec::new();
        let mut items = Vec::with_capacity(list.len());
        for (prefix, step, waits) in list {
            if step.unique_key.is_some() {
                problems.push((
                    format!("{prefix}/unique_key"),
                    "workflow steps cannot have a unique_key".to_owned(),
                ));
            }
            if waits && (step.run_at.is_some() || step.delay_ms.is_some()) {
                problems.push((
                    format!("{prefix}/delay_ms"),
                    "a step that waits for others starts when they finish".to_owned(),
                ));
            }
            items.push((prefix, step));
        }
        Ok(request::accept(self, items, problems, at).await?)
    }
}
