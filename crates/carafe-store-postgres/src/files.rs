//! `FileStore` on PostgreSQL.

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::files::{
    Bucket, BucketName, BucketPolicy, FileEncryption, FileFilter, FileId, FileRecord, FileStatus,
    NewFile, ProcessingOutcome, ScanResult, Thumbnail,
};
use carafe_core::jobs::{JobId, NewJob};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::FileStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;

use crate::audit::insert_audit;
use crate::jobs::insert::insert_rows;
use crate::jobs::wakeup::Wakeups;
use crate::rewrap::{self, Keyed};
use crate::{PgStore, map_err};

const COLUMNS: &str = "id, bucket, name, size, kind, mime, sha256, status, error_code, error, \
    owner, metadata, job_id, scan, thumbnails, legal_hold, created_at, updated_at, deleted_at, encryption";

fn bucket_from_row(row: &PgRow) -> StoreResult<Bucket> {
    let name: String = row.try_get("name").map_err(map_err)?;
    let policy: Json<BucketPolicy> = row.try_get("policy").map_err(map_err)?;
    Ok(Bucket {
        name: BucketName::parse(&name).map_err(|_| StoreError::corrupt("buckets.name"))?,
        policy: policy.0,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

fn file_from_row(row: &PgRow) -> StoreResult<FileRecord> {
    let bucket: String = row.try_get("bucket").map_err(map_err)?;
    let status: String = row.try_get("status").map_err(map_err)?;
    let metadata: Json<Value> = row.try_get("metadata").map_err(map_err)?;
    let scan: Option<Json<ScanResult>> = row.try_get("scan").map_err(map_err)?;
    let thumbnails: Json<Vec<Thumbnail>> = row.try_get("thumbnails").map_err(map_err)?;
    let encryption: Option<Json<FileEncryption>> = row.try_get("encryption").map_err(map_err)?;
    Ok(FileRecord {
        id: FileId(row.try_get("id").map_err(map_err)?),
        bucket: BucketName::parse(&bucket).map_err(|_| StoreError::corrupt("files.bucket"))?,
        name: row.try_get("name").map_err(map_err)?,
        size: row.try_get::<i64, _>("size").map_err(map_err)? as u64,
        kind: row.try_get("kind").map_err(map_err)?,
        mime: row.try_get("mime").map_err(map_err)?,
        sha256: row.try_get("sha256").map_err(map_err)?,
        status: FileStatus::parse(&status).ok_or_else(|| StoreError::corrupt("files.status"))?,
        error_code: row.try_get("error_code").map_err(map_err)?,
        error: row.try_get("error").map_err(map_err)?,
        owner: row.try_get("owner").map_err(map_err)?,
        metadata: metadata.0,
        job: row
            .try_get::<Option<i64>, _>("job_id")
            .map_err(map_err)?
            .map(JobId),
        scan: scan.map(|s| s.0),
        thumbnails: thumbnails.0,
        legal_hold: row.try_get("legal_hold").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        deleted_at: row.try_get("deleted_at").map_err(map_err)?,
        encryption: encryption.map(|e| e.0),
    })
}

async fn live_file(
    conn: &mut PgConnection,
    id: FileId,
    lock: bool,
) -> StoreResult<Option<FileRecord>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1 AND deleted_at IS NULL{lock}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(file_from_row)
        .transpose()
}

/// Inserts one job in the open transaction and tells its queue's workers.
async fn insert_job(conn: &mut PgConnection, job: &NewJob) -> StoreResult<JobId> {
    let job = insert_rows(&mut *conn, &[job], None)
        .await?
        .pop()
        .ok_or_else(|| StoreError::corrupt("job insert returned nothing"))?;
    let mut wake = Wakeups::default();
    wake.queue(&job.queue);
    wake.send(conn).await?;
    Ok(job.id)
}

#[async_trait]
impl FileStore for PgStore {
    async fn put_bucket(&self, b: Bucket, replace: bool) -> StoreResult<(Bucket, bool)> {
        let update = if replace {
            "DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at"
        } else {
            // A no-op update, so the existing row comes back from RETURNING.
            "DO UPDATE SET name = excluded.name"
        };
        let sql = format!(
            "INSERT INTO buckets (name, policy, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) {update} RETURNING *, xmax = 0 AS created"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(b.name.as_str())
            .bind(Json(&b.policy))
            .bind(b.created_at)
            .bind(b.updated_at)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let created: bool = row.try_get("created").map_err(map_err)?;
        Ok((bucket_from_row(&row)?, created))
    }

    async fn get_bucket(&self, name: &BucketName) -> StoreResult<Option<Bucket>> {
        sqlx::query("SELECT * FROM buckets WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(bucket_from_row)
            .transpose()
    }

    async fn list_buckets(&self) -> StoreResult<Vec<Bucket>> {
        sqlx::query("SELECT * FROM buckets ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(bucket_from_row)
            .collect()
    }

    async fn insert_file(
        &self,
        file: NewFile,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<FileRecord> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let job = insert_job(&mut tx, &job).await?;
        let record = file.into_record(Some(job));
        sqlx::query(
            "INSERT INTO files (id, bucket, name, size, kind, mime, sha256, status, owner, \
             metadata, job_id, created_at, updated_at, encryption) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(record.id.0)
        .bind(record.bucket.as_str())
        .bind(&record.name)
        .bind(record.size as i64)
        .bind(&record.kind)
        .bind(&record.mime)
        .bind(&record.sha256)
        .bind(record.status.as_str())
        .bind(&record.owner)
        .bind(Json(&record.metadata))
        .bind(job.0)
        .bind(record.created_at)
        .bind(record.updated_at)
        .bind(record.encryption.as_ref().map(Json))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn get_file(&self, id: FileId) -> StoreResult<Option<FileRecord>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        live_file(&mut conn, id, false).await
    }

    async fn list_files(
        &self,
        filter: &FileFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<FileRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM files WHERE deleted_at IS NULL"
        ));
        if let Some(after) = &page.after {
            let Ok(after) = after.parse::<FileId>() else {
                return Ok(Page::empty());
            };
            q.push(" AND id < ").push_bind(after.0);
        }
        if let Some(bucket) = &filter.bucket {
            q.push(" AND bucket = ")
                .push_bind(bucket.as_str().to_owned());
        }
        if let Some(owner) = &filter.owner {
            q.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(file_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |f| f.id.to_string()))
    }

    async fn finish_processing(
        &self,
        id: FileId,
        o: ProcessingOutcome,
        audit: Vec<NewAuditEvent>,
    ) -> StoreResult<Option<FileRecord>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = format!(
            "UPDATE files SET status = $1, error_code = $2, error = $3, scan = $4, \
             size = COALESCE($5, size), sha256 = COALESCE($6, sha256), thumbnails = $7, \
             updated_at = $8 WHERE id = $9 AND status = 'processing' AND deleted_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(o.status.as_str())
            .bind(&o.error_code)
            .bind(&o.error)
            .bind(o.scan.as_ref().map(Json))
            .bind(o.size.map(|s| s as i64))
            .bind(&o.sha256)
            .bind(Json(&o.thumbnails))
            .bind(o.at)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        for event in &audit {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await.map_err(map_err)?;
        file_from_row(&row).map(Some)
    }

    async fn delete_file(
        &self,
        id: FileId,
        now: OffsetDateTime,
        purge: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let Some(mut file) = live_file(&mut tx, id, true).await? else {
            return Ok(None);
        };
        if file.legal_hold {
            return Ok(None);
        }
        sqlx::query("UPDATE files SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_job(&mut tx, &purge).await?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        file.deleted_at = Some(now);
        file.updated_at = now;
        Ok(Some(file))
    }

    async fn purge_file(&self, id: FileId) -> StoreResult<bool> {
        let gone = sqlx::query("DELETE FROM files WHERE id = $1 AND deleted_at IS NOT NULL")
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(gone > 0)
    }

    async fn set_legal_hold(
        &self,
        id: FileId,
        hold: bool,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = format!(
            "UPDATE files SET legal_hold = $1, updated_at = $2 \
             WHERE id = $3 AND deleted_at IS NULL RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hold)
            .bind(at)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        file_from_row(&row).map(Some)
    }

    async fn expired_files(
        &self,
        bucket: &BucketName,
        before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FileId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM files WHERE bucket = $1 AND created_at < $2 AND deleted_at IS NULL \
             AND NOT legal_hold ORDER BY created_at LIMIT $3",
        )
        .bind(bucket.as_str())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(FileId).collect())
    }

    async fn files_not_under_key(
        &self,
        kid: &str,
        after: Option<FileId>,
        limit: u32,
    ) -> StoreResult<Vec<(FileId, FileEncryption)>> {
        let rows = rewrap::not_under_key(self, Keyed::Files, kid, after.map(|a| a.0), limit);
        Ok(rows
            .await?
            .into_iter()
            .map(|(id, e)| (FileId(id), e))
            .collect())
    }

    async fn set_file_encryption(&self, files: &[(FileId, FileEncryption)]) -> StoreResult<()> {
        rewrap::set_encryption(self, Keyed::Files, files, |id| id.0).await
    }
}
