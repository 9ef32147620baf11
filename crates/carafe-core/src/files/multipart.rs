//! S3 multipart uploads Carafe sends itself (a large received file going up in parts). S3
//! keeps the parts of an upload nobody completes or aborts — unseen, and billed — and
//! `object_store` cannot list multipart uploads, so the id is the only handle there is: each
//! upload is recorded before its first part is sent and forgotten once it is completed or
//! aborted. A record a crash leaves behind is the sweep's to abort.

use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartRecord {
    /// The object's key in Carafe's storage (`incoming/<id>`, …), without the storage prefix.
    pub key: String,
    /// S3's id of the multipart upload.
    pub upload_id: String,
    pub started_at: OffsetDateTime,
}
