//! The suppression half of `MailStore` on PostgreSQL: addresses mail is not sent to, keyed by
//! the lowercased address (the server lowercases; nothing here does). Apart from the messages
//! because a suppression is a plain row: nothing else changes with it.

use carafe_core::StoreResult;
use carafe_core::mail::Suppression;
use carafe_core::page::{Page, PageRequest};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::map_err;

const COLUMNS: &str = "address, reason, source, created_at";

fn from_row(row: &PgRow) -> StoreResult<Suppression> {
    Ok(Suppression {
        address: row.try_get("address").map_err(map_err)?,
        reason: row.try_get("reason").map_err(map_err)?,
        source: row.try_get("source").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

/// Adds `entry` unless its address is already suppressed: one statement, which answers with
/// the stored row and whether it was added now. Under a concurrent first insert of the same
/// address, `ON CONFLICT` waits for it and the second branch reads the winner's row.
pub(super) async fn put(pool: &PgPool, entry: &Suppression) -> StoreResult<(Suppression, bool)> {
    let sql = format!(
        "WITH ins AS (
             INSERT INTO mail_suppressions ({COLUMNS}) VALUES ($1, $2, $3, $4)
             ON CONFLICT (address) DO NOTHING
             RETURNING {COLUMNS})
         SELECT {COLUMNS}, true AS added FROM ins
         UNION ALL
         SELECT {COLUMNS}, false AS added FROM mail_suppressions
         WHERE address = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&entry.address)
        .bind(&entry.reason)
        .bind(&entry.source)
        .bind(entry.created_at)
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    Ok((from_row(&row)?, row.try_get("added").map_err(map_err)?))
}

pub(super) async fn get(pool: &PgPool, address: &str) -> StoreResult<Option<Suppression>> {
    let sql = format!("SELECT {COLUMNS} FROM mail_suppressions WHERE address = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Suppressions in address (byte) order; `after` is an address.
pub(super) async fn list(pool: &PgPool, page: &PageRequest) -> StoreResult<Page<Suppression>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mail_suppressions WHERE address > $1 ORDER BY address LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_overfetch(rows, page.limit, |s| {
        s.address.clone()
    }))
}

pub(super) async fn delete(pool: &PgPool, address: &str) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM mail_suppressions WHERE address = $1")
        .bind(address)
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected() > 0)
}
