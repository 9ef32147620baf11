//! `FileStore` on SQLite.

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::files::{
    Bucket, BucketName, BucketPolicy, FileEncryption, FileFilter, FileId, FileRecord, FileStatus,
    NewFile, ProcessingOutcome,
};
use carafe_core::jobs::{JobId, NewJob};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::FileStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;

use crate::audit::insert_audit;
use crate::jobs::insert::insert_plain;
use crate::rewrap::{self, Keyed};
use crate::{SqliteStore, at, map_err, ms};

const COLUMNS: &str = "id, bucket, name, size, kind, mime, sha256, status, error_code, error, \
    owner, metadata, job_id, scan, thumbnails, legal_hold, created_at, updated_at, deleted_at, encryption";

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |_| StoreError::corrupt(what)
}

fn bucket_from_row(row: &SqliteRow) -> StoreResult<Bucket> {
    let name: String = row.try_get("name").map_err(map_err)?;
    let policy: String = row.try_get("policy").map_err(map_err)?;
    Ok(Bucket {
        name: BucketName::parse(&name).map_err(|_| StoreError::corrupt("buckets.name"))?,
        policy: serde_json::from_str::<BucketPolicy>(&policy).map_err(corrupt("buckets.policy"))?,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        updated_at: at(row.try_get("updated_at").map_err(map_err)?),
    })
}

fn file_from_row(row: &SqliteRow) -> StoreResult<FileRecord> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
    let bucket = text("bucket")?;
    let status = text("status")?;
    Ok(FileRecord {
        id: text("id")?
            .parse()
            .map_err(|_| StoreError::corrupt("files.id"))?,
        bucket: BucketName::parse(&bucket).map_err(|_| StoreError::corrupt("files.bucket"))?,
        name: text("name")?,
        size: row.try_get::<i64, _>("size").map_err(map_err)? as u64,
        kind: text("kind")?,
        mime: text("mime")?,
        sha256: text("sha256")?,
        status: FileStatus::parse(&status).ok_or_else(|| StoreError::corrupt("files.status"))?,
        error_code: opt("error_code")?,
        error: opt("error")?,
        owner: opt("owner")?,
        metadata: serde_json::from_str(&text("metadata")?).map_err(corrupt("files.metadata"))?,
        job: row
            .try_get::<Option<i64>, _>("job_id")
            .map_err(map_err)?
            .map(JobId),
        scan: opt("scan")?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(corrupt("files.scan"))?,
        thumbnails: serde_json::from_str(&text("thumbnails")?)
            .map_err(corrupt("files.thumbnails"))?,
        legal_hold: row.try_get::<i64, _>("legal_hold").map_err(map_err)? != 0,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        updated_at: at(row.try_get("updated_at").map_err(map_err)?),
        deleted_at: row
            .try_get::<Option<i64>, _>("deleted_at")
            .map_err(map_err)?
            .map(at),
        encryption: opt("encryption")?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(corrupt("files.encryption"))?,
    })
}

async fn live_file(conn: &mut SqliteConnection, id: FileId) -> StoreResult<Option<FileRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM files WHERE id = ? AND deleted_at IS NULL");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(file_from_row)
        .transpose()
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("serializes")
}

#[async_trait]
impl FileStore for SqliteStore {
    async fn put_bucket(&self, b: Bucket, replace: bool) -> StoreResult<(Bucket, bool)> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT * FROM buckets WHERE name = ?")
            .bind(b.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(bucket_from_row)
            .transpose()?;
        let out = match existing {
            Some(old) if !replace => (old, false),
            Some(old) => {
                sqlx::query("UPDATE buckets SET policy = ?, updated_at = ? WHERE name = ?")
                    .bind(json(&b.policy))
                    .bind(ms(b.updated_at))
                    .bind(b.name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let created_at = old.created_at;
                (Bucket { created_at, ..b }, false)
            }
            None => {
                sqlx::query(
                    "INSERT INTO buckets (name, policy, created_at, updated_at) VALUES (?, ?, ?, ?)",
                )
                .bind(b.name.as_str())
                .bind(json(&b.policy))
                .bind(ms(b.created_at))
                .bind(ms(b.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                (b, true)
            }
        };
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn get_bucket(&self, name: &BucketName) -> StoreResult<Option<Bucket>> {
        sqlx::query("SELECT * FROM buckets WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(bucket_from_row)
            .transpose()
    }

    async fn list_buckets(&self) -> StoreResult<Vec<Bucket>> {
        sqlx::query("SELECT * FROM buckets ORDER BY name")
            .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let job = insert_plain(&mut tx, vec![job], None)
            .await?
            .pop()
            .ok_or_else(|| StoreError::corrupt("job insert returned nothing"))?;
        let record = file.into_record(Some(job.id));
        sqlx::query(
            "INSERT INTO files (id, bucket, name, size, kind, mime, sha256, status, owner, \
             metadata, job_id, created_at, updated_at, encryption) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(record.id.to_string())
        .bind(record.bucket.as_str())
        .bind(&record.name)
        .bind(record.size as i64)
        .bind(&record.kind)
        .bind(&record.mime)
        .bind(&record.sha256)
        .bind(record.status.as_str())
        .bind(&record.owner)
        .bind(record.metadata.to_string())
        .bind(job.id.0)
        .bind(ms(record.created_at))
        .bind(ms(record.updated_at))
        .bind(record.encryption.as_ref().map(json))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn get_file(&self, id: FileId) -> StoreResult<Option<FileRecord>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        live_file(&mut conn, id).await
    }

    async fn list_files(
        &self,
        filter: &FileFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<FileRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {COLUMNS} FROM files WHERE deleted_at IS NULL"
        ));
        if let Some(after) = &page.after {
            let Ok(after) = after.parse::<FileId>() else {
                return Ok(Page::empty());
            };
            q.push(" AND id < ").push_bind(after.to_string());
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
            .fetch_all(&self.reader)
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE files SET status = ?, error_code = ?, error = ?, scan = ?, \
             size = COALESCE(?, size), sha256 = COALESCE(?, sha256), thumbnails = ?, \
             updated_at = ? WHERE id = ? AND status = 'processing' AND deleted_at IS NULL",
        )
        .bind(o.status.as_str())
        .bind(&o.error_code)
        .bind(&o.error)
        .bind(o.scan.as_ref().map(json))
        .bind(o.size.map(|s| s as i64))
        .bind(&o.sha256)
        .bind(json(&o.thumbnails))
        .bind(ms(o.at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if done == 0 {
            return Ok(None);
        }
        for event in &audit {
            insert_audit(&mut tx, event).await?;
        }
        let file = live_file(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(file)
    }

    async fn delete_file(
        &self,
        id: FileId,
        now: OffsetDateTime,
        purge: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>> {
        let mut tx = self.begin_write().await?;
        let Some(mut file) = live_file(&mut tx, id).await? else {
            return Ok(None);
        };
        if file.legal_hold {
            return Ok(None);
        }
        sqlx::query("UPDATE files SET deleted_at = ?, updated_at = ? WHERE id = ?")
            .bind(ms(now))
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_plain(&mut tx, vec![purge], None).await?;
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        file.deleted_at = Some(now);
        file.updated_at = now;
        Ok(Some(file))
    }

    async fn purge_file(&self, id: FileId) -> StoreResult<bool> {
        let gone = sqlx::query("DELETE FROM files WHERE id = ? AND deleted_at IS NOT NULL")
            .bind(id.to_string())
            .execute(&self.writer)
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
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE files SET legal_hold = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
        )
        .bind(i64::from(hold))
        .bind(ms(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        insert_audit(&mut tx, &audit).await?;
        let file = live_file(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(file)
    }

    async fn expired_files(
        &self,
        bucket: &BucketName,
        before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FileId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM files WHERE bucket = ? AND created_at < ? AND deleted_at IS NULL \
             AND legal_hold = 0 ORDER BY created_at LIMIT ?",
        )
        .bind(bucket.as_str())
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        ids.iter()
            .map(|id| id.parse().map_err(|_| StoreError::corrupt("files.id")))
            .collect()
    }

    async fn files_not_under_key(
        &self,
        kid: &str,
        after: Option<FileId>,
        limit: u32,
    ) -> StoreResult<Vec<(FileId, FileEncryption)>> {
        rewrap::not_under_key(self, Keyed::Files, kid, after, limit).await
    }

    async fn set_file_encryption(&self, files: &[(FileId, FileEncryption)]) -> StoreResult<()> {
        rewrap::set_encryption(self, Keyed::Files, files).await
    }
}
