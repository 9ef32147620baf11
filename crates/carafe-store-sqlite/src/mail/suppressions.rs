//! Mail suppressions on SQLite: addresses mail is not sent to, keyed by the address (already
//! lowercased by the server), listed in address order. An address keeps its first entry.

use carafe_core::mail::Suppression;
use carafe_core::page::{Page, PageRequest};
use carafe_core::{StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::{at, map_err, ms};

const COLUMNS: &str = "address, reason, source, created_at";

fn from_row(row: &SqliteRow) -> StoreResult<Suppression> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    Ok(Suppression {
        address: text("address")?,
        reason: text("reason")?,
        source: text("source")?,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
    })
}

async fn get_in(conn: &mut SqliteConnection, address: &str) -> StoreResult<Option<Suppression>> {
    let sql = format!("SELECT {COLUMNS} FROM mail_suppressions WHERE address = ?");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Adds `entry` unless its address is already suppressed; the stored entry and whether it was
/// added now. The caller's connection is a write transaction, so the read sees the insert.
pub(super) async fn put(
    conn: &mut SqliteConnection,
    entry: &Suppression,
) -> StoreResult<(Suppression, bool)> {
    let added = sqlx::query(
        "INSERT INTO mail_suppressions (address, reason, source, created_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (address) DO NOTHING",
    )
    .bind(&entry.address)
    .bind(&entry.reason)
    .bind(&entry.source)
    .bind(ms(entry.created_at))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?
    .rows_affected()
        > 0;
    let stored = get_in(conn, &entry.address)
        .await?
        .ok_or_else(|| StoreError::corrupt("mail_suppressions.address"))?;
    Ok((stored, added))
}

pub(super) async fn get(reader: &SqlitePool, address: &str) -> StoreResult<Option<Suppression>> {
    let mut conn = reader.acquire().await.map_err(map_err)?;
    get_in(&mut conn, address).await
}

pub(super) async fn list(
    reader: &SqlitePool,
    page: &PageRequest,
) -> StoreResult<Page<Suppression>> {
    // Every address sorts above the empty string.
    let after = page.after.as_deref().unwrap_or("");
    let sql = format!(
        "SELECT {COLUMNS} FROM mail_suppressions WHERE address > ? ORDER BY address LIMIT ?"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(reader)
        .await
        .map_err(map_err)?
        .iter()
        .map(from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(rows, page.limit, |s| {
        s.address.clone()
    }))
}

/// Removes the suppression of `address`; false when there was none.
pub(super) async fn delete(writer: &SqlitePool, address: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM mail_suppressions WHERE address = ?")
        .bind(address)
        .execute(writer)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected() > 0)
}
