//! Finishing an upload whose last chunk arrived: the chunks are streamed back from storage,
//! in order, into one synced temporary file (hashed, with its head kept for type detection),
//! and that goes through `Files::accept` like any other upload. The upload then records the
//! file it became, or why it was refused, and its chunks are deleted.
//!
//! The last chunk does not advance the offset by itself: the upload ends (offset = length)
//! together with recording its outcome. If anything transient fails on the way (storage, the
//! database), the last chunk is discarded and the client simply sends it again. A chunk that
//! comes back damaged will not heal on a retry: the upload then ends as failed
//! (`upload_corrupt`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use carafe_core::StoreError;
use carafe_core::files::{Upload, UploadChunk, UploadEnd, UploadStatus};
use carafe_core::time::now;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::lock::UploadLock;
use super::{TusError, file_metadata, uploads_prefix};
use crate::context::Origin;
use crate::files::Files;
use crate::files::receive::accept::{UploadError, UploadMeta};
use crate::files::receive::body::{ReceiveError, receive};
use crate::files::store::crypto::DataKey;
use crate::files::store::storage::temp::Received;

/// The problem code of a refusal that is the file's fault (so the upload fails for good);
/// `None` for transient failures worth retrying.
pub fn refusal_code(e: &UploadError) -> Option<String> {
    match e {
        UploadError::Empty => Some("file_empty".into()),
        UploadError::Type { code, .. } => Some((*code).to_owned()),
        UploadError::NotAllowed(_) => Some("type_not_allowed".into()),
        UploadError::Storage(_)
        | UploadError::Store(_)
        | UploadError::NoMasterKey
        | UploadError::ScannerMissing
        | UploadError::Denied(_)
        | UploadError::Invalid(_)
        | UploadError::NoBucket(_) => None,
    }
}

impl Files {
    /// Assembles and accepts the upload whose `last` chunk is stored, and records the end.
    pub(super) async fn complete(
        &self,
        upload: &Upload,
        last: UploadChunk,
        dek: Option<&DataKey>,
        lock: &UploadLock,
        origin: Origin,
    ) -> Result<Upload, TusError> {
        let mut chunks = self.store().upload_chunks(upload.id).await?;
        chunks.push(last);
        let received = match self.assemble(upload, &chunks, dek).await {
            Ok(received) => received,
            Err(TusError::Corrupt) => {
                tracing::error!(upload = %upload.id, "an upload's stored chunk is damaged");
                let failed = UploadEnd::Failed("upload_corrupt".into());
                self.end(upload, lock, failed).await?;
                return Err(TusError::Corrupt);
            }
            Err(e) => return Err(e),
        };
        let Some(bucket) = self.bucket(&upload.bucket).await? else {
            return Err(StoreError::corrupt("an upload's bucket is gone").into());
        };
        let (name, metadata) = file_metadata(upload);
        let meta = UploadMeta {
            bucket,
            name,
            owner: upload.owner.clone(),
            metadata,
            origin,
        };
        let (end, refusal) = match self.accept(received, meta).await {
            Ok(file) => (UploadEnd::Completed(file.id), None),
            Err(e) => match refusal_code(&e) {
                Some(code) => (UploadEnd::Failed(code), Some(e)),
                None => {
                    return Err(match e {
                        UploadError::Store(e) => TusError::Store(e),
                        UploadError::Storage(e) => TusError::Storage(e),
                        e => TusError::Refused(e),
                    });
                }
            },
        };
        let keep_until = self.end(upload, lock, end.clone()).await?;
        if let Some(e) = refusal {
            return Err(TusError::Refused(e));
        }
        let mut done = upload.clone();
        done.offset = done.length;
        done.chunks = chunks.len() as u32;
        done.status = UploadStatus::Completed;
        done.expires_at = keep_until;
        if let UploadEnd::Completed(file) = end {
            done.file = Some(file);
        }
        Ok(done)
    }

    /// Records how the upload ended and deletes its chunks; returns until when it is kept.
    async fn end(
        &self,
        upload: &Upload,
        lock: &UploadLock,
        end: UploadEnd,
    ) -> Result<OffsetDateTime, TusError> {
        let at = now();
        let keep_until = at + self.upload_ttl();
        let finished = self
            .store()
            .finish_upload(upload.id, lock.holder(), end, at, keep_until)
            .await?;
        if !finished {
            // Only possible when the lock lapsed during a long assembly and another request
            // took it; the file (if any) exists, the upload does not know it.
            tracing::warn!(upload = %upload.id, "an upload ended after its lock was lost");
        }
        if let Err(e) = self.storage.delete_prefix(&uploads_prefix(upload.id)).await {
            // The row keeps the upload until it expires; the sweep deletes the chunks then.
            tracing::warn!(upload = %upload.id, error = %e, "cannot delete an upload's chunks");
        }
        Ok(keep_until)
    }

    /// Streams the chunks' plaintext, in order, into one received file of exactly the
    /// upload's length. `Corrupt` when a chunk is not what was received.
    async fn assemble(
        &self,
        upload: &Upload,
        chunks: &[UploadChunk],
        dek: Option<&DataKey>,
    ) -> Result<Received, TusError> {
        let corrupt = |what: &str| TusError::Storage(io::Error::other(what.to_owned()));
        let mut next = 0;
        for chunk in chunks {
            if chunk.offset != next {
                return Err(corrupt("an upload's chunks are not contiguous"));
            }
            next += chunk.size;
        }
        if next != upload.length {
            return Err(corrupt("an upload's chunks do not add up to its length"));
        }
        // `receive` keeps only the text of a body's error: whether it was damage (failed
        // decryption or check) rather than a storage failure is noted on the side.
        let damaged = Arc::new(AtomicBool::new(false));
        let seen = damaged.clone();
        let body = futures::stream::iter(chunks)
            .then(move |chunk| self.read_chunk(chunk, dek))
            .try_flatten()
            .inspect(move |r| {
                if r.as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::InvalidData)
                {
                    seen.store(true, Ordering::Relaxed);
                }
            })
            // Boxed: a named `Send` type keeps the handler's future provably `Send`.
            .boxed();
        let received = receive(body, &self.storage.temp_dir(), upload.length).await;
        if damaged.load(Ordering::Relaxed) {
            return Err(TusError::Corrupt);
        }
        let received = received.map_err(|e| match e {
            ReceiveError::Io(e) => TusError::Storage(e),
            e => corrupt(&e.to_string()),
        })?;
        if received.size != upload.length {
            return Err(corrupt("an upload's chunks are shorter than recorded"));
        }
        Ok(received)
    }
}
