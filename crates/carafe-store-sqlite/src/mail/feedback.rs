//! What providers report after a relay took a message (deliveries, bounces, complaints), on
//! SQLite. A report names its message by the relay's queue id or the `Message-ID` header, with
//! the recipient, so finding it is a lookup of its own; recording it is apart from the send
//! state machine (`sending.rs`) because it is not guarded by the state: every state gains the
//! timeline entry, only a `sent` message moves, and a report delivered twice (providers retry)
//! is recognised by its `event_id` and recorded once. The write transaction (`BEGIN
//! IMMEDIATE`) serialises writers, so the duplicate check and the append cannot interleave.

use carafe_core::StoreResult;
use carafe_core::mail::{Feedback, Message, MessageId, MessageRef};

use sqlx::{SqliteConnection, SqlitePool};

use super::sending::with_event;
use super::{MESSAGE_COLUMNS, message_from_row};
use crate::{map_err, ms};

/// The newest message to `r.recipient` the relay gave `r.relay_id`, else the newest to
/// `r.recipient` whose mail carries `r.message_id`. The key is what narrows the search: the
/// unary `+` keeps SQLite from walking `mail_messages_recipient` instead (it would, lacking
/// statistics, and a recipient may have many messages; a key has one or a mail's few).
pub(super) async fn find(pool: &SqlitePool, r: &MessageRef) -> StoreResult<Option<Message>> {
    if let Some(relay_id) = &r.relay_id {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages \
             WHERE relay_id = ? AND +recipient_lower = ? ORDER BY id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(relay_id)
            .bind(&r.recipient)
            .fetch_optional(pool)
            .await
            .map_err(map_err)?;
        if let Some(row) = row {
            return message_from_row(&row).map(Some);
        }
    }
    let Some(message_id) = &r.message_id else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM mail_messages \
         WHERE +recipient_lower = ? AND mail_id IN (SELECT id FROM mail WHERE message_id = ?) \
         ORDER BY id DESC LIMIT 1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&r.recipient)
        .bind(message_id)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(message_from_row)
        .transpose()
}

/// Records `feedback` on message `id` in the caller's write transaction: nothing when the
/// message is missing or its timeline already holds the report's `event_id`.
pub(super) async fn record(
    tx: &mut SqliteConnection,
    id: MessageId,
    feedback: Feedback,
) -> StoreResult<Option<Message>> {
    let seen: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM mail_events \
         WHERE message_id = ? AND json_extract(data, '$.event_id') = ?)",
    )
    .bind(id.to_string())
    .bind(&feedback.event_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    if seen {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE mail_messages SET \
         status = CASE WHEN status = 'sent' THEN COALESCE(?, status) ELSE status END, \
         updated_at = ?, event_seq = event_seq + 1 WHERE id = ? \
         RETURNING {MESSAGE_COLUMNS}, position, event_seq"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(feedback.status.map(|s| s.as_str()))
        .bind(ms(feedback.at))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let data = |_: &Message| feedback.entry_data();
    with_event(tx, row, feedback.at, &feedback.kind, data).await
}
