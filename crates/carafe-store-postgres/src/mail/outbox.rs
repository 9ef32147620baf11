//! The outbox half of `MailStore` on PostgreSQL: messages captured instead of sent, with the
//! searches over them. Apart from the messages' state machine because nothing here changes a
//! message: a capture is written in the finishing transaction (`insert`), and clearing the
//! outbox leaves the send log alone.

use carafe_core::mail::{MailId, MessageId, OutboxEntry, OutboxFilter, OutboxId, OutboxItem};
use carafe_core::page::{Page, PageRequest};
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::map_err;

/// Everything but `raw`, which only `get` reads.
const COLUMNS: &str = "id, message_id, mail_id, envelope_from, recipient, subject, \
    header_message_id, tags, size, created_at";

fn item_from_row(row: &PgRow) -> StoreResult<OutboxItem> {
    let tags: Json<Vec<String>> = row.try_get("tags").map_err(map_err)?;
    let size: i64 = row.try_get("size").map_err(map_err)?;
    Ok(OutboxItem {
        id: OutboxId(row.try_get("id").map_err(map_err)?),
        message: MessageId(row.try_get("message_id").map_err(map_err)?),
        mail: MailId(row.try_get("mail_id").map_err(map_err)?),
        envelope_from: row.try_get("envelope_from").map_err(map_err)?,
        recipient: row.try_get("recipient").map_err(map_err)?,
        subject: row.try_get("subject").map_err(map_err)?,
        message_id: row.try_get("header_message_id").map_err(map_err)?,
        tags: tags.0,
        size: u64::try_from(size).map_err(|_| StoreError::corrupt("mail_outbox.size"))?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

/// Captures `entry` in the caller's transaction.
pub(super) async fn insert(conn: &mut PgConnection, entry: &OutboxEntry) -> StoreResult<()> {
    let item = &entry.item;
    sqlx::query(
        "INSERT INTO mail_outbox (id, message_id, mail_id, envelope_from, recipient, subject, \
         header_message_id, tags, size, raw, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(item.id.0)
    .bind(item.message.0)
    .bind(item.mail.0)
    .bind(&item.envelope_from)
    .bind(&item.recipient)
    .bind(&item.subject)
    .bind(&item.message_id)
    .bind(Json(&item.tags))
    .bind(i64::try_from(item.size).unwrap_or(i64::MAX))
    .bind(&entry.raw)
    .bind(item.created_at)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Items, newest first (UUIDv7 ids: `id DESC`); `after` is an outbox id.
pub(super) async fn list(
    pool: &PgPool,
    filter: &OutboxFilter,
    page: &PageRequest,
) -> StoreResult<Page<OutboxItem>> {
    let Some(before) = page.after_or(OutboxId(Uuid::max())) else {
        return Ok(Page::empty());
    };
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM mail_outbox WHERE id < "));
    q.push_bind(before.0);
    if let Some(to) = &filter.to {
        q.push(" AND lower(recipient) = lower(")
            .push_bind(to.clone())
            .push(")");
    }
    // A substring, not a pattern: `strpos` gives `%` and `_` in the input no meaning.
    if let Some(subject) = &filter.subject {
        q.push(" AND strpos(lower(subject), lower(")
            .push_bind(subject.clone())
            .push(")) > 0");
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND tags ? ").push_bind(tag.clone());
    }
    if let Some(message_id) = &filter.message_id {
        q.push(" AND lower(header_message_id) = lower(")
            .push_bind(message_id.clone())
            .push(")");
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page.limit) + 1);
    let rows = q
        .build()
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(item_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(rows, page.limit, |i| i.id.to_string()))
}

pub(super) async fn get(pool: &PgPool, id: OutboxId) -> StoreResult<Option<OutboxEntry>> {
    let sql = format!("SELECT {COLUMNS}, raw FROM mail_outbox WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(OutboxEntry {
        item: item_from_row(&row)?,
        raw: row.try_get("raw").map_err(map_err)?,
    }))
}

/// Removes one item (`Some(id)`) or every item (`None`); returns how many went.
pub(super) async fn delete(pool: &PgPool, id: Option<OutboxId>) -> StoreResult<u64> {
    let q = match id {
        Some(id) => sqlx::query("DELETE FROM mail_outbox WHERE id = $1").bind(id.0),
        None => sqlx::query("DELETE FROM mail_outbox"),
    };
    Ok(q.execute(pool).await.map_err(map_err)?.rows_affected())
}
