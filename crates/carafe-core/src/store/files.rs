//! Buckets and the rows of stored files: their processing, deletion, legal holds, retention
//! and the rewrapping of their data keys.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::audit::NewAuditEvent;
use crate::files::{
    Bucket, BucketName, FileEncryption, FileFilter, FileId, FileRecord, NewFile, ProcessingOutcome,
};
use crate::jobs::NewJob;
use crate::page::{Page, PageRequest};

/// Buckets and file rows. A file's row is written with its processing job (and audit event)
/// in one transaction, so no stored upload is ever left without the job that processes it.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores a bucket. With `replace`, an existing bucket's policy is replaced (keeping its
    /// creation time); without, an existing bucket is returned unchanged. True when created.
    async fn put_bucket(&self, bucket: Bucket, replace: bool) -> StoreResult<(Bucket, bool)>;
    async fn get_bucket(&self, name: &BucketName) -> StoreResult<Option<Bucket>>;
    /// Every bucket, in name order.
    async fn list_buckets(&self) -> StoreResult<Vec<Bucket>>;
    /// Records an upload whose bytes are stored, with its processing job (whose id the row
    /// keeps) and its audit event.
    async fn insert_file(
        &self,
        file: NewFile,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<FileRecord>;
    /// A file that is not deleted.
    async fn get_file(&self, id: FileId) -> StoreResult<Option<FileRecord>>;
    /// Files that are not deleted, newest first; `after` is a file id.
    async fn list_files(
        &self,
        filter: &FileFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<FileRecord>>;
    /// Ends processing with `outcome` and appends `audit`, if the file is still processing;
    /// `None` otherwise (processing already ended, or the file is gone).
    async fn finish_processing(
        &self,
        id: FileId,
        outcome: ProcessingOutcome,
        audit: Vec<NewAuditEvent>,
    ) -> StoreResult<Option<FileRecord>>;
    /// Marks a file deleted (hiding it at once) and enqueues the job that purges its bytes,
    /// with the audit event. `None` when there is no such file (or it was deleted already, or
    /// it is under legal hold).
    async fn delete_file(
        &self,
        id: FileId,
        at: OffsetDateTime,
        purge: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>>;
    /// Forgets a deleted file once its bytes are gone; false when there was no deleted row.
    async fn purge_file(&self, id: FileId) -> StoreResult<bool>;
    /// Sets or clears a file's legal hold (a held file is never deleted), with the audit event.
    async fn set_legal_hold(
        &self,
        id: FileId,
        hold: bool,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>>;
    /// Up to `limit` live files of `bucket` created before `before` and not under legal hold
    /// (for retention), oldest first.
    async fn expired_files(
        &self,
        bucket: &BucketName,
        before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FileId>>;

    /// Up to `limit` files (deleted ones too) whose data key is wrapped under a master key
    /// other than `kid`, in id order after `after`.
    async fn files_not_under_key(
        &self,
        kid: &str,
        after: Option<FileId>,
        limit: u32,
    ) -> StoreResult<Vec<(FileId, FileEncryption)>>;

    /// Replaces the encryption of these files (rewrapped keys), in one transaction.
    async fn set_file_encryption(&self, files: &[(FileId, FileEncryption)]) -> StoreResult<()>;
}
