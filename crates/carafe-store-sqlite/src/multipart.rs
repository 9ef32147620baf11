//! `MultipartRecordStore` on SQLite: one row per S3 multipart upload in flight, keyed by the
//! object's key and the upload id (a key can have several uploads, say a retried chunk).

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::files::MultipartRecord;
use carafe_core::store::MultipartRecordStore;
use sqlx::Row;
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};

#[async_trait]
impl MultipartRecordStore for SqliteStore {
    async fn record_multipart(&self, record: MultipartRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO multipart_uploads (key, upload_id, started_at) VALUES (?, ?, ?)")
            .bind(&record.key)
            .bind(&record.upload_id)
            .bind(ms(record.started_at))
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn forget_multipart(&self, key: &str, upload_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM multipart_uploads WHERE key = ? AND upload_id = ?")
            .bind(key)
            .bind(upload_id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn stale_multiparts(
        &self,
        started_before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MultipartRecord>> {
        let rows = sqlx::query(
            "SELECT key, upload_id, started_at FROM multipart_uploads WHERE started_at <= ? \
             ORDER BY started_at, key, upload_id LIMIT ?",
        )
        .bind(ms(started_before))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                Ok(MultipartRecord {
                    key: row.try_get("key").map_err(map_err)?,
                    upload_id: row.try_get("upload_id").map_err(map_err)?,
                    started_at: at(row.try_get("started_at").map_err(map_err)?),
                })
            })
            .collect()
    }
}
