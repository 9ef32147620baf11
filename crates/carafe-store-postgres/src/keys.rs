//! `KeyStore` on PostgreSQL.

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::keys::{ApiKey, KeyHash, KeyId, KeyName, NewApiKey, Scopes};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::KeyStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PgStore, audit::insert_audit, map_err};

fn key_from_row(row: &PgRow) -> StoreResult<ApiKey> {
    let name: String = row.try_get("name").map_err(map_err)?;
    let scopes: String = row.try_get("scopes").map_err(map_err)?;
    Ok(ApiKey {
        id: KeyId(row.try_get("id").map_err(map_err)?),
        name: KeyName::parse(&name).map_err(|_| StoreError::corrupt("api_keys.name"))?,
        prefix: row.try_get("prefix").map_err(map_err)?,
        scopes: Scopes::parse_list(&scopes).map_err(|_| StoreError::corrupt("api_keys.scopes"))?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        revoked_at: row.try_get("revoked_at").map_err(map_err)?,
    })
}

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, key: NewApiKey, audit: NewAuditEvent) -> StoreResult<ApiKey> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.id.0)
        .bind(key.name.as_str())
        .bind(&key.prefix)
        .bind(&key.hash.0[..])
        .bind(key.scopes.to_string())
        .bind(key.created_at)
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
        let row = sqlx::query(
            "SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys WHERE hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn get_key(&self, id: KeyId) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(
            "SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, page: &PageRequest) -> StoreResult<Page<ApiKey>> {
        let Some(after) = page.after_or(Uuid::nil()) else {
            return Ok(Page::empty());
        };
        let rows = sqlx::query(
            "SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
             RETURNING id, name, prefix, scopes, created_at, revoked_at",
        )
        .bind(when)
        .bind(id.0)
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
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(n as u64)
    }
}
