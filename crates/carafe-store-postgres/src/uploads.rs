//! `UploadStore` on PostgreSQL. Locking and advancing are single conditional `UPDATE`s: under
//! READ COMMITTED a concurrent update of the same row makes PostgreSQL re-check the `WHERE`
//! against the row as committed, so of two instances racing for one lock exactly one wins.

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::files::{
    Advance, BucketName, FileEncryption, FileId, NewUpload, Upload, UploadChunk, UploadEnd,
    UploadId, UploadStatus,
};
use carafe_core::store::UploadStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::audit::insert_audit;
use crate::rewrap::{self, Keyed};
use crate::{PgStore, map_err};

const COLUMNS: &str = "id, bucket, owner, length, received, metadata, actor, chunks, status, \
    file_id, error_code, lock_holder, locked_until, created_at, updated_at, expires_at, \
    encryption";

fn upload_from_row(row: &PgRow) -> StoreResult<Upload> {
    let bucket: String = row.try_get("bucket").map_err(map_err)?;
    let status: String = row.try_get("status").map_err(map_err)?;
    let metadata: Json<Value> = row.try_get("metadata").map_err(map_err)?;
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(map_err);
    Ok(Upload {
        id: UploadId(row.try_get("id").map_err(map_err)?),
        bucket: BucketName::parse(&bucket).map_err(|_| StoreError::corrupt("uploads.bucket"))?,
        owner: row.try_get("owner").map_err(map_err)?,
        length: int("length")? as u64,
        offset: int("received")? as u64,
        metadata: metadata.0,
        actor: row.try_get("actor").map_err(map_err)?,
        chunks: row.try_get::<i32, _>("chunks").map_err(map_err)? as u32,
        status: UploadStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("uploads.status"))?,
        file: row
            .try_get::<Option<uuid::Uuid>, _>("file_id")
            .map_err(map_err)?
            .map(FileId),
        error_code: row.try_get("error_code").map_err(map_err)?,
        lock_holder: row.try_get("lock_holder").map_err(map_err)?,
        locked_until: row.try_get("locked_until").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        expires_at: row.try_get("expires_at").map_err(map_err)?,
        encryption: row
            .try_get::<Option<Json<FileEncryption>>, _>("encryption")
            .map_err(map_err)?
            .map(|e| e.0),
    })
}

#[async_trait]
impl UploadStore for PgStore {
    async fn insert_upload(&self, new: NewUpload, audit: NewAuditEvent) -> StoreResult<Upload> {
        let upload = new.into_upload();
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO uploads (id, bucket, owner, length, metadata, actor, status, \
             created_at, updated_at, expires_at, encryption) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(upload.id.0)
        .bind(upload.bucket.as_str())
        .bind(&upload.owner)
        .bind(upload.length as i64)
        .bind(Json(&upload.metadata))
        .bind(&upload.actor)
        .bind(upload.status.as_str())
        .bind(upload.created_at)
        .bind(upload.updated_at)
        .bind(upload.expires_at)
        .bind(upload.encryption.as_ref().map(Json))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(upload)
    }

    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>> {
        let sql = format!("SELECT {COLUMNS} FROM uploads WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(upload_from_row)
            .transpose()
    }

    async fn try_lock_upload(
        &self,
        id: UploadId,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET lock_holder = $1, locked_until = $2 WHERE id = $3 \
             AND (lock_holder IS NULL OR lock_holder = $1 OR locked_until <= $4)",
        )
        .bind(holder)
        .bind(until)
        .bind(id.0)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_upload(&self, id: UploadId, holder: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE uploads SET lock_holder = NULL, locked_until = NULL \
             WHERE id = $1 AND lock_holder = $2",
        )
        .bind(id.0)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn advance_upload(&self, a: Advance<'_>) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE uploads SET received = received + $1, chunks = chunks + 1, updated_at = $2, \
             expires_at = $3 WHERE id = $4 AND status = 'active' AND lock_holder = $5 \
             AND received = $6 AND received + $1 <= length",
        )
        .bind(a.chunk.size as i64)
        .bind(a.now)
        .bind(a.expires_at)
        .bind(a.id.0)
        .bind(a.holder)
        .bind(a.chunk.offset as i64)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO upload_chunks (upload_id, start, size, key, sha256) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(a.id.0)
        .bind(a.chunk.offset as i64)
        .bind(a.chunk.size as i64)
        .bind(&a.chunk.key)
        .bind(&a.chunk.sha256)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn upload_chunks(&self, id: UploadId) -> StoreResult<Vec<UploadChunk>> {
        let rows = sqlx::query(
            "SELECT start, size, key, sha256 FROM upload_chunks WHERE upload_id = $1 \
             ORDER BY start",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(UploadChunk {
                    offset: r.try_get::<i64, _>("start").map_err(map_err)? as u64,
                    size: r.try_get::<i64, _>("size").map_err(map_err)? as u64,
                    key: r.try_get("key").map_err(map_err)?,
                    sha256: r.try_get("sha256").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn finish_upload(
        &self,
        id: UploadId,
        holder: &str,
        end: UploadEnd,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (status, file, code) = match end {
            UploadEnd::Completed(file) => (UploadStatus::Completed, Some(file.0), None),
            UploadEnd::Failed(code) => (UploadStatus::Failed, None, Some(code)),
        };
        let done = sqlx::query(
            "UPDATE uploads SET status = $1, file_id = $2, error_code = $3, received = length, \
             lock_holder = NULL, locked_until = NULL, updated_at = $4, expires_at = $5 \
             WHERE id = $6 AND status = 'active' AND lock_holder = $7",
        )
        .bind(status.as_str())
        .bind(file)
        .bind(code)
        .bind(now)
        .bind(expires_at)
        .bind(id.0)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn terminate_upload(
        &self,
        id: UploadId,
        holder: &str,
        now: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE uploads SET status = 'terminated', updated_at = $1, expires_at = $1 \
             WHERE id = $2 AND status <> 'terminated' AND lock_holder = $3",
        )
        .bind(now)
        .bind(id.0)
        .bind(holder)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn purge_upload(&self, id: UploadId) -> StoreResult<bool> {
        let gone = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(gone > 0)
    }

    async fn expired_uploads(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Upload>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM uploads WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(upload_from_row)
            .collect()
    }

    async fn uploads_not_under_key(
        &self,
        kid: &str,
        after: Option<UploadId>,
        limit: u32,
    ) -> StoreResult<Vec<(UploadId, FileEncryption)>> {
        let rows = rewrap::not_under_key(self, Keyed::Uploads, kid, after.map(|a| a.0), limit);
        Ok(rows
            .await?
            .into_iter()
            .map(|(id, e)| (UploadId(id), e))
            .collect())
    }

    async fn set_upload_encryption(
        &self,
        uploads: &[(UploadId, FileEncryption)],
    ) -> StoreResult<()> {
        rewrap::set_encryption(self, Keyed::Uploads, uploads, |id| id.0).await
    }
}
