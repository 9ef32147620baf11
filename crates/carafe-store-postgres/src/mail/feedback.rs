//! What providers report after a relay took a message (deliveries, bounces, complaints), on
//! PostgreSQL. A report names its message by the relay's queue id or the `Message-ID` header,
//! with the recipient, so finding it is a lookup of its own; recording it is not one guarded
//! transition like the send state machine's (`mod.rs`): every state gains the timeline entry,
//! only a `sent` message moves, and a report delivered twice (providers retry, sometimes at
//! once) is recognised by its `event_id` and recorded once. That check reads the timeline
//! before writing to it, so it runs under the message row's lock.

use carafe_core::StoreResult;
use carafe_core::mail::{Feedback, Message, MessageId, MessageRef};

use sqlx::PgPool;
use sqlx::types::Json;

use super::{MESSAGE_COLUMNS, message_from_row, transition};
use crate::map_err;

/// The newest message to `r.recipient` the relay gave `r.relay_id`, else the newest to
/// `r.recipient` whose mail carries `r.message_id`.
///
/// Messages keep their recipient as given, and `lower()` depends on the database's locale, so
/// the recipient is compared in Rust by its Unicode lowercase (as the server folds it): the
/// query narrows by the key and, for ASCII addresses, by `lower(recipient)`, and returns any
/// non-ASCII one for Rust to compare.
pub(super) async fn find(pool: &PgPool, r: &MessageRef) -> StoreResult<Option<Message>> {
    const SAME_RECIPIENT: &str =
        "(lower(recipient) = $2 OR octet_length(recipient) <> char_length(recipient))";
    if let Some(relay_id) = &r.relay_id {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages \
             WHERE relay_id = $1 AND {SAME_RECIPIENT} ORDER BY id DESC"
        );
        let found = newest_to(pool, &sql, relay_id, &r.recipient).await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    let Some(message_id) = &r.message_id else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM mail_messages \
         WHERE mail_id IN (SELECT id FROM mail WHERE message_id = $1) AND {SAME_RECIPIENT} \
         ORDER BY id DESC"
    );
    newest_to(pool, &sql, message_id, &r.recipient).await
}

/// The first message `sql` (binding `key` and `recipient`) returns whose recipient lowercases
/// to `recipient`.
async fn newest_to(
    pool: &PgPool,
    sql: &str,
    key: &str,
    recipient: &str,
) -> StoreResult<Option<Message>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .bind(recipient)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    for row in &rows {
        let message = message_from_row(row)?;
        if message.recipient.to_lowercase() == recipient {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

/// Records `feedback` on message `id` in one transaction: nothing when the message is missing
/// or its timeline already holds the report's `event_id`.
pub(super) async fn record(
    pool: &PgPool,
    id: MessageId,
    feedback: Feedback,
) -> StoreResult<Option<Message>> {
    let mut tx = pool.begin().await.map_err(map_err)?;
    // The row lock comes first: a concurrent copy of the report waits here, and its check
    // below (a new snapshot, at read committed) then sees this one's event.
    let exists = sqlx::query("SELECT 1 FROM mail_messages WHERE id = $1 FOR UPDATE")
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    if exists.is_none() {
        return Ok(None);
    }
    let seen: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM mail_events \
         WHERE message_id = $1 AND data->>'event_id' = $2)",
    )
    .bind(id.0)
    .bind(&feedback.event_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    if seen {
        return Ok(None);
    }
    let sql = transition(
        "id = $1",
        "status = CASE WHEN status = 'sent' THEN COALESCE($2, status) ELSE status END, \
         updated_at = $3",
        "$3",
        "$4",
        "$5",
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(feedback.status.map(|s| s.as_str()))
        .bind(feedback.at)
        .bind(&feedback.kind)
        .bind(Json(feedback.entry_data()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let message = message_from_row(&row)?;
    tx.commit().await.map_err(map_err)?;
    Ok(Some(message))
}
