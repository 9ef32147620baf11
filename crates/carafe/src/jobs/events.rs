//! Watching a job: every state and progress change, in order, resumable after any event.
//!
//! Events are numbered per job inside the transaction that changes the job (holding its row),
//! so numbers commit in order and a reader that resumes after event `n` can never skip one
//! that committed late. `Jobs::watch` replays from the database, then waits for a wake-up (or
//! polls), and ends after a final state, when the watcher goes away, or when `stop` fires.

use carafe_core::jobs::{JobEvent, JobId, JobState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Jobs, job_topic};

/// Events read from the database per round.
const BATCH: u32 = 500;

/// Whether `e` records a final state (the last event a job gets).
pub fn is_final(e: &JobEvent) -> bool {
    e.kind == "state"
        && e.data["state"]
            .as_str()
            .and_then(|s| s.parse::<JobState>().ok())
            .is_some_and(JobState::is_final)
}

impl Jobs {
    /// The job's events after event number `after` (0: all), as they happen: the receiver gets
    /// each in order and closes after a final state, when the job is gone, or when `stop` fires.
    /// Dropping the receiver stops the watch.
    pub fn watch(
        self: &std::sync::Arc<Self>,
        id: JobId,
        after: i64,
        stop: CancellationToken,
    ) -> mpsc::Receiver<JobEvent> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.clone().feed(id, after, tx, stop));
        rx
    }

    async fn feed(
        self: std::sync::Arc<Self>,
        id: JobId,
        mut after: i64,
        tx: mpsc::Sender<JobEvent>,
        stop: CancellationToken,
    ) {
        let topic = job_topic(id);
        let mut wakeups = self.bus().subscribe();
        let poll = self.settings().poll_interval.0;
        let mut saw_final_job = false;
        loop {
            let batch = match self.store().job_events(id, after, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, job = id.0, "event stream stopped: cannot read events");
                    return;
                }
            };
            let full = batch.len() == BATCH as usize;
            let empty = batch.is_empty();
            for e in batch {
                after = e.seq;
                let last = is_final(&e);
                if tx.send(e).await.is_err() || last {
                    return;
                }
            }
            if full {
                continue;
            }
            if empty {
                // Nothing new. If the job is gone or final, its last event is either already
                // sent (before the watcher's `after`) or committed just after the read above:
                // read once more, then stop.
                match self.store().get_job(id).await {
                    Ok(Some(job)) if !job.state.is_final() => {}
                    _ if saw_final_job => return,
                    _ => {
                        saw_final_job = true;
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = wakeups.wait_for(&topic, poll) => {}
                () = tx.closed() => return,
                () = stop.cancelled() => return,
            }
        }
    }
}
