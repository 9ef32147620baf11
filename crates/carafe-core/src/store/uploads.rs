//! Resumable (tus) uploads: their rows, their lock, and the chunks stored so far.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::audit::NewAuditEvent;
use crate::files::{Advance, FileEncryption, NewUpload, Upload, UploadChunk, UploadEnd, UploadId};

/// Resumable (tus) uploads. Appending is guarded by a lock with an expiry (so a crashed
/// holder cannot block an upload for long) and every append is fenced by the lock holder and
/// the offset it expects, so two requests — on one instance or several — never both write.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a new upload (offset 0, active) with its audit event.
    async fn insert_upload(&self, upload: NewUpload, audit: NewAuditEvent) -> StoreResult<Upload>;
    /// The upload in any status, expired or not.
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>>;
    /// Takes or renews the upload's lock until `until`: true when `holder` holds it now
    /// (it was free, lapsed, or already `holder`'s). False for unknown uploads.
    async fn try_lock_upload(
        &self,
        id: UploadId,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Gives the lock up, if `holder` has it.
    async fn release_upload(&self, id: UploadId, holder: &str) -> StoreResult<()>;
    /// Records a stored chunk and moves the offset past it, if the upload is active, `holder`
    /// holds the lock and the offset is still the chunk's offset; true when it was.
    async fn advance_upload(&self, advance: Advance<'_>) -> StoreResult<bool>;
    /// The upload's recorded chunks, in offset order.
    async fn upload_chunks(&self, id: UploadId) -> StoreResult<Vec<UploadChunk>>;
    /// Ends an active upload whose bytes all arrived (the offset becomes the length), frees
    /// its lock and keeps the row until `expires_at`; only for the lock's `holder`.
    async fn finish_upload(
        &self,
        id: UploadId,
        holder: &str,
        end: UploadEnd,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Marks an upload terminated and expired at `now` (hidden at once; the sweep finishes
    /// the clean-up if the caller cannot), with its audit event; only for the lock's `holder`.
    async fn terminate_upload(
        &self,
        id: UploadId,
        holder: &str,
        now: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Forgets an upload and its chunk rows (their objects must be gone); true when it existed.
    async fn purge_upload(&self, id: UploadId) -> StoreResult<bool>;
    /// Up to `limit` uploads whose expiry has passed (any status), oldest expiry first.
    async fn expired_uploads(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Upload>>;

    /// Up to `limit` uploads (any status) whose data key is wrapped under a master key other
    /// than `kid`, in id order after `after`.
    async fn uploads_not_under_key(
        &self,
        kid: &str,
        after: Option<UploadId>,
        limit: u32,
    ) -> StoreResult<Vec<(UploadId, FileEncryption)>>;
    /// Replaces the encryption of these uploads (rewrapped keys), in one transaction.
    async fn set_upload_encryption(
        &self,
        uploads: &[(UploadId, FileEncryption)],
    ) -> StoreResult<()>;
}
