//! Cancelling one job inside the caller's transaction: an operator's cancel (`admin.rs`) and a
//! workflow that gives up on its remaining steps (`workflows.rs`) both come here.

use carafe_core::StoreResult;
use carafe_core::jobs::{Job, JobId, JobState};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::rows::{change, get_in};
use super::wakeup::Wakeups;

/// Cancels a waiting (or pending) job at once, or asks a running one to stop; final jobs are
/// left alone. Returns the job as it is now (locked until the transaction ends).
pub(crate) async fn cancel_in(
    conn: &mut PgConnection,
    id: JobId,
    now: OffsetDateTime,
    wake: &mut Wakeups,
) -> StoreResult<Option<Job>> {
    let Some(job) = get_in(&mut *conn, id, true).await? else {
        return Ok(None);
    };
    let (set, data) = match job.state {
        JobState::Pending | JobState::Scheduled | JobState::Available | JobState::Retryable => (
            "UPDATE jobs SET state = 'cancelled', finalized_at = $2",
            json!({"state": JobState::Cancelled, "attempt": job.attempt}),
        ),
        JobState::Running if !job.cancel_requested => (
            "UPDATE jobs SET cancel_requested = true",
            json!({
                "state": JobState::Running,
                "attempt": job.attempt,
                "cancel_requested": true,
            }),
        ),
        // Final, or already asked to stop: nothing changes.
        _ => return Ok(Some(job)),
    };
    let job = change(conn, id, now, set, data).await?;
    wake.job(id);
    wake.queue(&job.queue);
    Ok(Some(job))
}
