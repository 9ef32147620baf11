//! `KeyStore` on SQLite.

use async_trait::async_trait;
use carafe_core::StoreError;
use carafe_core::StoreResult;
use carafe_core::audit::NewAuditEvent;
use carafe_core::keys::{ApiKey, KeyHash, KeyId, KeyName, NewApiKey, Scopes};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::KeyStore;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, at, audit::insert_audit, map_err, ms};

const COLUMNS: &str = "id, name, prefix, scopes, created_at, revoked_at";

fn key_from_row(row: &SqliteRow) -> StoreResult<ApiKey> {
    let id: String = row.try_get("id").map_err(map_err)?;
    let name: String = row.try_get("name").map_err(map_err)?;
    let scopes: String = row.try_get("scopes").map_err(map_err)?;
    Ok(ApiKey {
        id: id.parse().map_err(|_| StoreError::corrupt("api_keys.id"))?,
        name: KeyName::parse(&name).map_err(|_| StoreError::corrupt("api_keys.name"))?,
        prefix: row.try_get("prefix").map_err(map_err)?,
        scopes: Scopes::parse_list(&scopes).map_err(|_| StoreError::corrupt("api_keys.scopes"))?,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")
            .map_err(map_err)?
            .map(at),
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: NewApiKey, audit: NewAuditEvent) -> StoreResult<ApiKey> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
        .bind(key.name.as_str())
        .bind(&key.prefix)
        .bind(&key.hash.0[..])
        .bind(key.scopes.to_string())
        .bind(ms(key.created_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(ApiKey {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes,
            created_at: key.created_at,
            revoked_at: None,
        })
    }

    async fn find_key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<ApiKey>> {
        let sql = const_format(COLUMNS, "WHERE hash = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&hash.0[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn get_key(&self, id: KeyId) -> StoreResult<Option<ApiKey>> {
        let sql = const_format(COLUMNS, "WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, page: &PageRequest) -> StoreResult<Page<ApiKey>> {
        let sql = const_format(COLUMNS, "WHERE id > ? ORDER BY id LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.clone().unwrap_or_default())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        let keys = rows
            .iter()
            .map(key_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(keys, page.limit, |k| k.id.to_string()))
    }

    async fn revoke_key(
        &self,
        id: KeyId,
        when: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<ApiKey>> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(when))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key = key_from_row(&row)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(key))
    }

    async fn count_active_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(n as u64)
    }
}

fn const_format(columns: &str, tail: &str) -> String {
    format!("SELECT {columns} FROM api_keys {tail}")
}
