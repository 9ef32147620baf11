//! The record of S3 multipart uploads in flight, so that a crash cannot leave parts behind
//! that nobody aborts (and pays for).

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::files::MultipartRecord;

/// S3 multipart uploads Carafe sends itself (see `files::MultipartRecord`): recorded before
/// the first part goes up, forgotten once completed or aborted, so a crash in between leaves a
/// record the sweep aborts. Several instances may share the records: the sweep only takes
/// those older than a cut-off no live upload is expected to reach.
#[async_trait]
pub trait MultipartRecordStore: Send + Sync {
    async fn record_multipart(&self, record: MultipartRecord) -> StoreResult<()>;
    /// Forgets one upload's record; true when it existed (forgetting twice is not an error).
    async fn forget_multipart(&self, key: &str, upload_id: &str) -> StoreResult<bool>;
    /// Up to `limit` records started at or before `started_before`, oldest first.
    async fn stale_multiparts(
        &self,
        started_before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MultipartRecord>>;
}
