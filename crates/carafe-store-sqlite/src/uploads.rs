//! `UploadStore` on SQLite. Every write goes through the single writer connection, so each
//! fenced `UPDATE … WHERE lock_holder = ? AND received = ?` is decided against the latest row.

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::files::{
    Advance, BucketName, FileEncryption, NewUpload, Upload, UploadChunk, UploadEnd, UploadId,
    UploadStatus,
};
use carafe_core::store::UploadStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::audit::insert_audit;
use crate::rewrap::{self, Keyed};
use crate::{SqliteStore, at, map_err, ms};

const COLUMNS: &str = "id, bucket, owner, length, received, metadata, actor, chunks, status, \
    file_id, error_code, lock_holder, locked_until, created_at, updated_at, expires_at, \
    encryption";

fn encryption(text: &str) -> StoreResult<FileEncryption> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("uploads.encryption"))
}

fn upload_from_row(row: &SqliteRow) -> StoreResult<Upload> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(map_err);
    let bucket = text("bucket")?;
    let status = text("status")?;
    Ok(Upload {
        id: text("id")?
            .parse()
            .map_err(|_| StoreError::corrupt("uploads.id"))?,
        bucket: BucketName::parse(&bucket).map_err(|_| StoreError::corrupt("uploads.bucket"))?,
        owner: opt("owner")?,
        length: int("length")? as u64,
        offset: int("received")? as u64,
        metadata: serde_json::from_str(&text("metadata")?)
            .map_err(|_| StoreError::corrupt("uploads.metadata"))?,
        actor: text("actor")?,
        chunks: int("chunks")? as u32,
        status: UploadStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("uploads.status"))?,
        file: opt("file_id")?
            .map(|f| f.parse())
            .transpose()
            .map_err(|_| StoreError::corrupt("uploads.file_id"))?,
        error_code: opt("error_code")?,
        lock_holder: opt("lock_holder")?,
        locked_until: row
            .try_get::<Option<i64>, _>("locked_until")
            .map_err(map_err)?
            .map(at),
        created_at: at(int("created_at")?),
        updated_at: at(int("updated_at")?),
        expires_at: at(int("expires_at")?),
        encryption: opt("encryption")?.as_deref().map(encryption).transpose()?,
    })
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn insert_upload(&self, new: NewUpload, audit: NewAuditEvent) -> StoreResult<Upload> {
        let upload = new.into_upload();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO uploads (id, bucket, owner, length, metadata, actor, status, \
             created_at, updated_at, expires_at, encryption) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(upload.id.to_string())
        .bind(upload.bucket.as_str())
        .bind(&upload.owner)
        .bind(upload.length as i64)
        .bind(upload.metadata.to_string())
        .bind(&upload.actor)
        .bind(upload.status.as_str())
        .bind(ms(upload.created_at))
        .bind(ms(upload.updated_at))
        .bind(ms(upload.expires_at))
        .bind(upload.encryption.as_ref().map(json))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(upload)
    }

    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>> {
        let sql = format!("SELECT {COLUMNS} FROM uploads WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
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
            "UPDATE uploads SET lock_holder = ?, locked_until = ? WHERE id = ? \
             AND (lock_holder IS NULL OR lock_holder = ? OR locked_until <= ?)",
        )
        .bind(holder)
        .bind(ms(until))
        .bind(id.to_string())
        .bind(holder)
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_upload(&self, id: UploadId, holder: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE uploads SET lock_holder = NULL, locked_until = NULL \
             WHERE id = ? AND lock_holder = ?",
        )
        .bind(id.to_string())
        .bind(holder)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn advance_upload(&self, a: Advance<'_>) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE uploads SET received = received + ?, chunks = chunks + 1, updated_at = ?, \
             expires_at = ? WHERE id = ? AND status = 'active' AND lock_holder = ? \
             AND received = ? AND received + ? <= length",
        )
        .bind(a.chunk.size as i64)
        .bind(ms(a.now))
        .bind(ms(a.expires_at))
        .bind(a.id.to_string())
        .bind(a.holder)
        .bind(a.chunk.offset as i64)
        .bind(a.chunk.size as i64)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO upload_chunks (upload_id, start, size, key, sha256) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(a.id.to_string())
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
            "SELECT start, size, key, sha256 FROM upload_chunks WHERE upload_id = ? ORDER BY start",
        )
        .bind(id.to_string())
        .fetch_all(&self.reader)
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
            UploadEnd::Completed(file) => (UploadStatus::Completed, Some(file.to_string()), None),
            UploadEnd::Failed(code) => (UploadStatus::Failed, None, Some(code)),
        };
        let done = sqlx::query(
            "UPDATE uploads SET status = ?, file_id = ?, error_code = ?, received = length, \
             lock_holder = NULL, locked_until = NULL, updated_at = ?, expires_at = ? \
             WHERE id = ? AND status = 'active' AND lock_holder = ?",
        )
        .bind(status.as_str())
        .bind(file)
        .bind(code)
        .bind(ms(now))
        .bind(ms(expires_at))
        .bind(id.to_string())
        .bind(holder)
        .execute(&self.writer)
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE uploads SET status = 'terminated', updated_at = ?, expires_at = ? \
             WHERE id = ? AND status <> 'terminated' AND lock_holder = ?",
        )
        .bind(ms(now))
        .bind(ms(now))
        .bind(id.to_string())
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
        let gone = sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(gone > 0)
    }

    async fn expired_uploads(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Upload>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
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
        rewrap::not_under_key(self, Keyed::Uploads, kid, after, limit).await
    }

    async fn set_upload_encryption(
        &self,
        uploads: &[(UploadId, FileEncryption)],
    ) -> StoreResult<()> {
        rewrap::set_encryption(self, Keyed::Uploads, uploads).await
    }
}

fn json(enc: &FileEncryption) -> String {
    serde_json::to_string(enc).expect("serializes")
}
