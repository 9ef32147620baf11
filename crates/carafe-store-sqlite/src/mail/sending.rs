//! The send state machine on SQLite: each change of a message is one guarded `UPDATE` (the
//! state it may change from is in its `WHERE`, so two concurrent attempts cannot both win) with
//! its timeline entry, in the caller's transaction.

use carafe_core::mail::{
    Mail, MailId, Message, MessageId, MessageStatus, OutboxEntry, SendOutcome,
};
use carafe_core::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use super::{MESSAGE_COLUMNS, WAITING, mail_in, message_from_row, outbox};
use crate::{map_err, ms};

/// One timeline entry to append: `seq` is the message row's `event_seq` after its change.
pub(super) struct NewEvent<'a> {
    pub(super) message: MessageId,
    pub(super) seq: i64,
    pub(super) at: OffsetDateTime,
    pub(super) kind: &'a str,
    pub(super) data: Value,
}

pub(super) async fn add_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent<'_>],
) -> StoreResult<()> {
    // Five parameters per row keeps each statement far below SQLite's 32,766 limit.
    for chunk in events.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO mail_events (message_id, seq, at, kind, data) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.message.to_string())
                .push_bind(e.seq)
                .push_bind(ms(e.at))
                .push_bind(e.kind)
                .push_bind(e.data.to_string());
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

/// A message row as an `UPDATE … RETURNING` gives it back, with its new `event_seq` (and its
/// `position`, to put several back in order).
pub(super) fn changed_from_row(row: &SqliteRow) -> StoreResult<(i64, i64, Message)> {
    Ok((
        row.try_get("position").map_err(map_err)?,
        row.try_get("event_seq").map_err(map_err)?,
        message_from_row(row)?,
    ))
}

/// Appends the event of a single message's transition, its data made from the changed
/// message: `row` is what its `UPDATE … RETURNING` gave back (`None`: it did not change, and
/// nothing is added).
pub(super) async fn with_event(
    tx: &mut SqliteConnection,
    row: Option<SqliteRow>,
    at: OffsetDateTime,
    kind: &str,
    data: impl FnOnce(&Message) -> Value,
) -> StoreResult<Option<Message>> {
    let Some((_, seq, message)) = row.as_ref().map(changed_from_row).transpose()? else {
        return Ok(None);
    };
    let event = NewEvent {
        message: message.id,
        seq,
        at,
        kind,
        data: data(&message),
    };
    add_events(tx, &[event]).await?;
    Ok(Some(message))
}

/// Starts an attempt: a waiting message becomes `sending`, with its event; the mail too.
pub(super) async fn start(
    tx: &mut SqliteConnection,
    id: MessageId,
    now: OffsetDateTime,
) -> StoreResult<Option<(Mail, Message)>> {
    let sql = format!(
        "UPDATE mail_messages SET status = 'sending', attempts = attempts + 1, \
         updated_at = ?, event_seq = event_seq + 1 WHERE id = ? AND {WAITING} \
         RETURNING {MESSAGE_COLUMNS}, position, event_seq"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ms(now))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let data = |m: &Message| json!({"attempt": m.attempts});
    let Some(message) = with_event(tx, row, now, "sending", data).await? else {
        return Ok(None);
    };
    let mail = mail_in(tx, message.mail)
        .await?
        .ok_or_else(|| StoreError::corrupt("mail_messages.mail_id"))?;
    Ok(Some((mail, message)))
}

/// Ends an attempt of a `sending` message with `outcome`, capturing `outbox` if given.
pub(super) async fn finish(
    tx: &mut SqliteConnection,
    id: MessageId,
    outcome: SendOutcome,
    outbox: Option<OutboxEntry>,
) -> StoreResult<Option<Message>> {
    let sent_at = (outcome.status == MessageStatus::Sent).then(|| ms(outcome.at));
    let sql = format!(
        "UPDATE mail_messages SET status = ?, reply = ?, relay_id = ?, updated_at = ?, \
         sent_at = COALESCE(?, sent_at), event_seq = event_seq + 1 \
         WHERE id = ? AND status = 'sending' \
         RETURNING {MESSAGE_COLUMNS}, position, event_seq"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(outcome.status.as_str())
        .bind(&outcome.reply)
        .bind(&outcome.relay_id)
        .bind(ms(outcome.at))
        .bind(sent_at)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let kind = outcome.status.as_str();
    let data = |_: &Message| outcome.data;
    let Some(message) = with_event(tx, row, outcome.at, kind, data).await? else {
        return Ok(None);
    };
    if let Some(entry) = &outbox {
        outbox::insert(tx, entry).await?;
    }
    Ok(Some(message))
}

/// Cancels a mail's waiting messages, each with its event, in the mail's order.
pub(super) async fn cancel(
    tx: &mut SqliteConnection,
    id: MailId,
    now: OffsetDateTime,
) -> StoreResult<Vec<Message>> {
    let sql = format!(
        "UPDATE mail_messages SET status = 'cancelled', updated_at = ?, \
         event_seq = event_seq + 1 WHERE mail_id = ? AND {WAITING} \
         RETURNING {MESSAGE_COLUMNS}, position, event_seq"
    );
    let mut changed = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ms(now))
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(changed_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING gives rows in no promised order; the mail's order is `position`.
    changed.sort_by_key(|(position, _, _)| *position);
    let events: Vec<NewEvent> = changed
        .iter()
        .map(|(_, seq, m)| NewEvent {
            message: m.id,
            seq: *seq,
            at: now,
            kind: "cancelled",
            data: json!({}),
        })
        .collect();
    add_events(tx, &events).await?;
    Ok(changed.into_iter().map(|(_, _, m)| m).collect())
}
