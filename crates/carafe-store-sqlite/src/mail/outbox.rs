//! The mail outbox on SQLite: messages captured instead of sent (no relay configured), with
//! their exact bytes, listed newest first and searched by recipient, subject, tag and
//! Message-ID. Entries are written by `finish_sending`, in its transaction.

use carafe_core::StoreResult;
use carafe_core::mail::{OutboxEntry, OutboxFilter, OutboxId, OutboxItem};
use carafe_core::page::{Page, PageRequest};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{fold, json, parsed, uuid_col};
use crate::{at, map_err, ms};

const ITEM_COLUMNS: &str = "id, message_id, mail_id, envelope_from, recipient, subject, \
    header_message_id, tags, size, created_at";

fn item_from_row(row: &SqliteRow) -> StoreResult<OutboxItem> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    Ok(OutboxItem {
        id: uuid_col(row, "id", "mail_outbox.id")?,
        message: uuid_col(row, "message_id", "mail_outbox.message_id")?,
        mail: uuid_col(row, "mail_id", "mail_outbox.mail_id")?,
        envelope_from: text("envelope_from")?,
        recipient: text("recipient")?,
        subject: text("subject")?,
        message_id: text("header_message_id")?,
        tags: parsed(&text("tags")?, "mail_outbox.tags")?,
        size: row.try_get::<i64, _>("size").map_err(map_err)? as u64,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
    })
}

pub(super) async fn insert(conn: &mut SqliteConnection, entry: &OutboxEntry) -> StoreResult<()> {
    let item = &entry.item;
    sqlx::query(
        "INSERT INTO mail_outbox (id, message_id, mail_id, envelope_from, recipient, \
         recipient_lower, subject, header_message_id, tags, size, raw, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(item.id.to_string())
    .bind(item.message.to_string())
    .bind(item.mail.to_string())
    .bind(&item.envelope_from)
    .bind(&item.recipient)
    .bind(fold(&item.recipient))
    .bind(&item.subject)
    .bind(&item.message_id)
    .bind(json(&item.tags))
    .bind(item.size as i64)
    .bind(&entry.raw)
    .bind(ms(item.created_at))
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(super) async fn list(
    reader: &SqlitePool,
    filter: &OutboxFilter,
    page: &PageRequest,
) -> StoreResult<Page<OutboxItem>> {
    // UUIDv7 text sorts by creation: newest first is `id DESC`.
    let Some(before) = page.after_or(OutboxId(Uuid::max())) else {
        return Ok(Page::empty());
    };
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {ITEM_COLUMNS} FROM mail_outbox WHERE id < "
    ));
    q.push_bind(before.to_string());
    if let Some(to) = &filter.to {
        q.push(" AND recipient_lower = ").push_bind(fold(to));
    }
    if let Some(subject) = &filter.subject {
        // A substring, not a pattern: `instr` has no wildcards to escape. SQLite's `lower()`
        // folds ASCII letters only.
        q.push(" AND instr(lower(subject), lower(")
            .push_bind(subject.clone())
            .push(")) > 0");
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(message_id) = &filter.message_id {
        // Message-IDs are ASCII: NOCASE (ASCII folding) is enough.
        q.push(" AND header_message_id = ")
            .push_bind(message_id.clone())
            .push(" COLLATE NOCASE");
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.limit) + 1);
    let rows = q
        .build()
        .fetch_all(reader)
        .await
        .map_err(map_err)?
        .iter()
        .map(item_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(rows, page.limit, |i| i.id.to_string()))
}

pub(super) async fn get(reader: &SqlitePool, id: OutboxId) -> StoreResult<Option<OutboxEntry>> {
    let sql = format!("SELECT {ITEM_COLUMNS}, raw FROM mail_outbox WHERE id = ?");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(reader)
        .await
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    Ok(Some(OutboxEntry {
        item: item_from_row(&row)?,
        raw: row.try_get("raw").map_err(map_err)?,
    }))
}

/// Removes one entry (`Some(id)`) or every entry; returns how many went.
pub(super) async fn delete(writer: &SqlitePool, id: Option<OutboxId>) -> StoreResult<u64> {
    let done = match id {
        Some(id) => {
            sqlx::query("DELETE FROM mail_outbox WHERE id = ?")
                .bind(id.to_string())
                .execute(writer)
                .await
        }
        None => sqlx::query("DELETE FROM mail_outbox").execute(writer).await,
    };
    Ok(done.map_err(map_err)?.rows_affected())
}
