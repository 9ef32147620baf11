//! Cancelling one job inside the caller's transaction: an operator's cancel (`admin.rs`) and a
//! workflow that gives up on its remaining steps (`workflows.rs`) both come here.

use carafe_core::StoreResult;
use carafe_core::jobs::{Job, JobId, JobState};
use serde_json::json;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

use super::rows::{NewEvent, add_events, get_in};
use crate::{map_err, ms};

/// Cancels a waiting (or pending) job at once, or asks a running one to stop; final jobs are
/// left alone. Returns the job as it is now.
pub(crate) async fn cancel_in(
    conn: &mut SqliteConnection,
    id: JobId,
    now: OffsetDateTime,
) -> StoreResult<Option<Job>> {
    let Some(job) = get_in(&mut *conn, id.0).await? else {
        return Ok(None);
    };
    let (query, data) = match job.state {
        JobState::Pending | JobState::Scheduled | JobState::Available | JobState::Retryable => (
            sqlx::query_scalar(
                "UPDATE jobs SET state = 'cancelled', finalized_at = ?, event_seq = event_seq + 1
                 WHERE id = ? RETURNING event_seq",
            )
            .bind(ms(now)),
            json!({"state": JobState::Cancelled, "attempt": job.attempt}),
        ),
        JobState::Running if !job.cancel_requested => (
            sqlx::query_scalar(
                "UPDATE jobs SET cancel_requested = 1, event_seq = event_seq + 1
                 WHERE id = ? RETURNING event_seq",
            ),
            json!({"state": JobState::Running, "attempt": job.attempt, "cancel_requested": true}),
        ),
        // Final, or already asked to stop: nothing changes.
        _ => return Ok(Some(job)),
    };
    let seq: i64 = query
        .bind(id.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    let event = NewEvent {
        job: id.0,
        seq,
        kind: "state",
        data,
    };
    add_events(&mut *conn, now, &[event]).await?;
    get_in(conn, id.0).await
}
