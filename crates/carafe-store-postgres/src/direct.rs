//! `DirectStore` on PostgreSQL: one row per direct-upload session; a state change is one
//! conditional `UPDATE`, so of two racing `complete` calls exactly one wins.

use async_trait::async_trait;
use carafe_core::files::{BucketName, DirectState, DirectUpload, FileId};
use carafe_core::store::DirectStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::{PgStore, map_err};

const COLUMNS: &str =
    "id, bucket, owner, name, size, metadata, state, multipart, created_at, expires_at";

fn from_row(row: &PgRow) -> StoreResult<DirectUpload> {
    let bucket: String = row.try_get("bucket").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    let metadata: Json<Value> = row.try_get("metadata").map_err(map_err)?;
    Ok(DirectUpload {
        id: FileId(row.try_get("id").map_err(map_err)?),
        bucket: BucketName::parse(&bucket)
            .map_err(|_| StoreError::corrupt("direct_uploads.bucket"))?,
        owner: row.try_get("owner").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        size: row.try_get::<i64, _>("size").map_err(map_err)? as u64,
        metadata: metadata.0,
        state: DirectState::parse(&state)
            .ok_or_else(|| StoreError::corrupt("direct_uploads.state"))?,
        multipart: row.try_get("multipart").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        expires_at: row.try_get("expires_at").map_err(map_err)?,
    })
}

#[async_trait]
impl DirectStore for PgStore {
    async fn insert_direct(&self, d: DirectUpload) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO direct_uploads (id, bucket, owner, name, size, metadata, state, \
             multipart, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(d.id.0)
        .bind(d.bucket.as_str())
        .bind(&d.owner)
        .bind(&d.name)
        .bind(d.size as i64)
        .bind(Json(&d.metadata))
        .bind(d.state.as_str())
        .bind(&d.multipart)
        .bind(d.created_at)
        .bind(d.expires_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_direct(&self, id: FileId) -> StoreResult<Option<DirectUpload>> {
        let sql = format!("SELECT {COLUMNS} FROM direct_uploads WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn transition_direct(
        &self,
        id: FileId,
        from: DirectState,
        to: DirectState,
    ) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE direct_uploads SET state = $1 WHERE id = $2 AND state = $3")
            .bind(to.as_str())
            .bind(id.0)
            .bind(from.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_direct(&self, id: FileId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM direct_uploads WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn expired_directs(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DirectUpload>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM direct_uploads WHERE expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(from_row)
            .collect()
    }
}
