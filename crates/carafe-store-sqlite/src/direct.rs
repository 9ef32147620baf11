//! `DirectStore` on SQLite: one row per direct-upload session; state changes are
//! conditional `UPDATE`s through the single writer.

use async_trait::async_trait;
use carafe_core::files::{BucketName, DirectState, DirectUpload, FileId};
use carafe_core::store::DirectStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};

const COLUMNS: &str =
    "id, bucket, owner, name, size, metadata, state, multipart, created_at, expires_at";

fn from_row(row: &SqliteRow) -> StoreResult<DirectUpload> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(map_err);
    Ok(DirectUpload {
        id: text("id")?
            .parse()
            .map_err(|_| StoreError::corrupt("direct_uploads.id"))?,
        bucket: BucketName::parse(&text("bucket")?)
            .map_err(|_| StoreError::corrupt("direct_uploads.bucket"))?,
        owner: row.try_get("owner").map_err(map_err)?,
        name: text("name")?,
        size: int("size")? as u64,
        metadata: serde_json::from_str(&text("metadata")?)
            .map_err(|_| StoreError::corrupt("direct_uploads.metadata"))?,
        state: DirectState::parse(&text("state")?)
            .ok_or_else(|| StoreError::corrupt("direct_uploads.state"))?,
        multipart: row.try_get("multipart").map_err(map_err)?,
        created_at: at(int("created_at")?),
        expires_at: at(int("expires_at")?),
    })
}

#[async_trait]
impl DirectStore for SqliteStore {
    async fn insert_direct(&self, d: DirectUpload) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO direct_uploads (id, bucket, owner, name, size, metadata, state, \
             multipart, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.id.to_string())
        .bind(d.bucket.as_str())
        .bind(&d.owner)
        .bind(&d.name)
        .bind(d.size as i64)
        .bind(d.metadata.to_string())
        .bind(d.state.as_str())
        .bind(&d.multipart)
        .bind(ms(d.created_at))
        .bind(ms(d.expires_at))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_direct(&self, id: FileId) -> StoreResult<Option<DirectUpload>> {
        let sql = format!("SELECT {COLUMNS} FROM direct_uploads WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.writer)
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
        let done = sqlx::query("UPDATE direct_uploads SET state = ? WHERE id = ? AND state = ?")
            .bind(to.as_str())
            .bind(id.to_string())
            .bind(from.as_str())
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_direct(&self, id: FileId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM direct_uploads WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
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
            "SELECT {COLUMNS} FROM direct_uploads WHERE expires_at <= ? \
             ORDER BY expires_at LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .iter()
            .map(from_row)
            .collect()
    }
}
