//! In-process job handlers, for Carafe's own capabilities (file processing, mail, fan-out).
//! A handler is a small trait: it gets a context that reports progress, saves a checkpoint
//! and sees cancellation, and answers with a result or an error that says *retry* or
//! *abort*. The runner claims jobs on the same lease protocol as external workers, keeps the
//! lease alive while a handler runs, stops a handler that overruns its timeout (first softly,
//! through its cancellation token, then for good), and completes jobs through the engine's group commit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::jobs::{
    Claim, ClaimedJob, Completion, Failure, Fenced, Heartbeat, JobId, LeaseToken, Progress,
    QueueName, RetryRequest,
};
use carafe_core::time::now;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Jobs;

/// After the soft stop (cancellation), how long a handler has before it is aborted.
const GRACE: Duration = Duration::from_secs(5);
/// Most jobs claimed in one statement.
const BATCH: usize = 500;

/// What a failed handler asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Try again later (after `after`, or the job's backoff).
    Retry {
        message: String,
        after: Option<Duration>,
    },
    /// Do not try again: the input can never succeed.
    Abort { message: String },
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry {
            message: message.into(),
            after: None,
        }
    }

    pub fn abort(message: impl Into<String>) -> Self {
        JobError::Abort {
            message: message.into(),
        }
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError>;
}

/// What a running handler can see and do.
pub struct JobContext {
    job: ClaimedJob,
    cancel: CancellationToken,
    jobs: Arc<Jobs>,
}

impl JobContext {
    pub fn id(&self) -> JobId {
        self.job.id
    }

    pub fn args(&self) -> &Value {
        &self.job.args
    }

    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// Whether a failure now would be final (no attempts are left).
    pub fn is_last_attempt(&self) -> bool {
        self.job.attempt >= self.job.max_attempts
    }

    /// What an earlier attempt saved with `checkpoint`, to resume from.
    pub fn saved_checkpoint(&self) -> Option<&Value> {
        self.job.checkpoint.as_ref()
    }

    /// Cancelled when the job is cancelled, its timeout passes, or its lease is lost: stop
    /// soon and return an error.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports progress (streamed to the job's watchers).
    pub async fn progress(&self, progress: Progress) -> Result<(), JobError> {
        self.report(Some(progress), None).await
    }

    /// Saves a checkpoint: if this attempt fails, the next one starts with it.
    pub async fn checkpoint(&self, checkpoint: Value) -> Result<(), JobError> {
        self.report(None, Some(checkpoint)).await
    }

    async fn report(
        &self,
        progress: Option<Progress>,
        checkpoint: Option<Value>,
    ) -> Result<(), JobError> {
        let hb = Heartbeat {
            id: self.job.id,
            lease_token: self.job.lease_token.clone(),
            now: now(),
            renew: None,
            progress,
            checkpoint,
        };
        match self.jobs.heartbeat(hb).await {
            Ok(Fenced::Done(ack)) => {
                if ack.cancel_requested {
                    self.cancel.cancel();
                }
                Ok(())
            }
            Ok(_) => {
                self.cancel.cancel();
                Err(JobError::abort("the job's lease was lost"))
            }
            Err(e) => Err(JobError::retry(format!("could not save progress: {e}"))),
        }
    }
}

/// The handlers of a process: which queue each serves and how many jobs it runs at once.
#[derive(Clone, Default)]
pub struct Handlers {
    specs: Vec<(QueueName, usize, Arc<dyn JobHandler>)>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `queue` with `handler`, running at most `concurrency` jobs at once.
    pub fn add(mut self, queue: &str, concurrency: usize, handler: impl JobHandler) -> Self {
        let queue = QueueName::parse(queue).expect("a handler's queue name is valid");
        self.specs
            .push((queue, concurrency.max(1), Arc::new(handler)));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Runs every handler until `stop`, then lets running jobs finish for up to `drain`.
    pub async fn run(
        self,
        jobs: Arc<Jobs>,
        worker: String,
        stop: CancellationToken,
        drain: Duration,
    ) {
        let mut queues = JoinSet::new();
        for (queue, concurrency, handler) in self.specs {
            let ctx = QueueLoop {
                jobs: jobs.clone(),
                queue,
                concurrency,
                handler,
                worker: worker.clone(),
            };
            queues.spawn(ctx.run(stop.clone(), drain));
        }
        while queues.join_next().await.is_some() {}
    }
}

struct QueueLoop {
    jobs: Arc<Jobs>,
    queue: QueueName,
    concurrency: usize,
    handler: Arc<dyn JobHandler>,
    worker: String,
}

impl QueueLoop {
    async fn run(self, stop: CancellationToken, drain: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let poll = self.jobs.settings().poll_interval.0;
        let mut running: JoinSet<()> = JoinSet::new();
        let soft_stop = CancellationToken::new();
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = running.join_next() => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let max = free.min(BATCH) as u32;
            let claimed = match self
                .jobs
                .claim(
                    Claim {
                        queue: &self.queue,
                        worker: &self.worker,
                        max,
                        // The queue's lease (or `jobs.lease`), renewed every third of it
                        // while the handler runs.
                        lease: self.jobs.lease(None),
                        now: now(),
                        push: false,
                    },
                    poll,
                    &stop,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, queue = %self.queue, "claiming failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        () = stop.cancelled() => {}
                    }
                    continue;
                }
            };
            for job in claimed {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open");
                let run = RunOne {
                    jobs: self.jobs.clone(),
                    handler: self.handler.clone(),
                    soft_stop: soft_stop.child_token(),
                };
                running.spawn(async move {
                    run.run(job).await;
                    drop(permit);
                });
            }
        }
        // Stop claiming; let running jobs finish, then ask them to stop, then abort them
        // (their leases expire and they are rescued and retried).
        let drained = tokio::time::timeout(drain, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            soft_stop.cancel();
            let graced = tokio::time::timeout(GRACE, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if graced.is_err() {
                tracing::warn!(queue = %self.queue, "aborting handlers still running at shutdown");
                running.shutdown().await;
            }
        }
    }
}

struct RunOne {
    jobs: Arc<Jobs>,
    handler: Arc<dyn JobHandler>,
    soft_stop: CancellationToken,
}

impl RunOne {
    async fn run(self, job: ClaimedJob) {
        let cancel = self.soft_stop.clone();
        let (id, token, queue, timeout) = (
            job.id,
            job.lease_token.clone(),
            job.queue.clone(),
            job.timeout,
        );
        let keeper = tokio::spawn(keep_lease(
            self.jobs.clone(),
            id,
            token.clone(),
            job.lease,
            cancel.clone(),
        ));
        let ctx = JobContext {
            job,
            cancel: cancel.clone(),
            jobs: self.jobs.clone(),
        };
        let handler = self.handler.clone();
        let started = std::time::Instant::now();
        let mut task = tokio::spawn(async move { handler.run(ctx).await });
        let outcome = tokio::select! {
            joined = &mut task => joined,
            () = tokio::time::sleep(timeout) => {
                cancel.cancel();
                match tokio::time::timeout(GRACE, &mut task).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        task.abort();
                        Ok(Err(JobError::retry(format!("timed out after {}", humantime::format_duration(timeout)))))
                    }
                }
            }
        };
        keeper.abort();
        metrics::histogram!("carafe_jobs_run_seconds", "queue" => queue.as_str().to_owned())
            .record(started.elapsed().as_secs_f64());
        let (message, retry) = match outcome {
            Ok(Ok(result)) => {
                let done = Completion {
                    id,
                    lease_token: token,
                    result,
                    outside: false,
                };
                complete(&self.jobs, done).await;
                return;
            }
            Ok(Err(JobError::Retry { message, after })) => (
                message,
                after.map_or(RetryRequest::Default, RetryRequest::After),
            ),
            Ok(Err(JobError::Abort { message })) => (message, RetryRequest::Never),
            Err(panic) => (
                format!("the handler panicked: {panic}"),
                RetryRequest::Default,
            ),
        };
        let failure = Failure {
            id,
            lease_token: token.clone(),
            message,
            retry,
            now: now(),
        };
        if let Err(e) = self.jobs.fail(failure, Some(&queue)).await {
            tracing::warn!(error = %e, job = id.0, "could not record a failed attempt; the lease will expire and the job be retried");
        }
    }
}

/// Renews the lease (of length `lease` when claimed) every third of it; cancels the handler
/// when the job is cancelled or the lease is lost.
async fn keep_lease(
    jobs: Arc<Jobs>,
    id: JobId,
    token: LeaseToken,
    lease: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let hb = Heartbeat {
            id,
            lease_token: token.clone(),
            now: now(),
            renew: Some(jobs.lease(None)),
            progress: None,
            checkpoint: None,
        };
        match jobs.heartbeat(hb).await {
            Ok(Fenced::Done(ack)) if ack.cancel_requested => cancel.cancel(),
            Ok(Fenced::Done(_)) => {}
            Ok(_) => {
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, job = id.0, "could not renew a lease"),
        }
    }
}

/// Completes a finished job. Jobs finishing at the same time share one commit (the engine's
/// group commit), so a busy runner writes few transactions and an idle one adds no delay.
/// Retried while the database is unavailable; if it stays so, the job's lease runs out and it
/// is rescued and run again.
async fn complete(jobs: &Jobs, done: Completion) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match jobs.complete(vec![done.clone()]).await {
            Ok(_) => return,
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, "completing a job failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, job = done.id.0, "could not complete a job; it will be rescued and run again")
            }
        }
    }
}
