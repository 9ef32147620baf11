//! Resumable uploads with the tus 1.0 protocol, for large files over flaky networks and for
//! proxies that cap request bodies: a client creates an upload, sends it in chunks (each one
//! a `PATCH`), and after an interruption asks how far it got and goes on from there.
//!
//! Each chunk is received to a synced temporary file, checked against the client's
//! checksum, and stored as its own object under `uploads/<id>/`; only then does the upload's
//! offset advance, so an acknowledged byte is never lost. Appending needs the upload's lock
//! (in the database, so it holds across instances) and every advance is fenced by the lock
//! holder and the expected offset: two requests can never both write. When the last byte
//! arrives the chunks are read back in order into one received file that goes through
//! `Files::accept` — the same checks and processing as any other upload. Uploads to
//! encrypting buckets seal every chunk before it is stored (see `sealing`). Expired uploads
//! are deleted by the sweep (`lifecycle::expired`).

pub mod complete;
pub mod lock;
pub mod sealing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::files::{Advance, Bucket, NewUpload, Upload, UploadChunk, UploadId, UploadStatus};
use carafe_core::time::now;
use carafe_core::{StoreError, StoreResult};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use super::accept::UploadError;
use super::body::{ReceiveError, receive};
use crate::context::Origin;
use crate::files::Files;
use lock::UploadLock;

/// Chunks one upload may have: a client sending tiny chunks must not make the final
/// assembly read a million objects.
pub const MAX_CHUNKS: u32 = 10_000;

/// A chunk whose body stops arriving for this long is abandoned: a client whose network died
/// without closing the connection must not keep the upload locked (the lock is renewed for
/// as long as the request lives).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Metadata keys Carafe reads itself; the others become the file's metadata.
const RESERVED_KEYS: [&str; 2] = ["filename", "bucket"];

pub fn uploads_prefix(id: UploadId) -> String {
    format!("uploads/{id}")
}

/// A chunk's object. The lock holder is part of the key, so a request that lost its lock
/// while storing can never overwrite the chunk of the request that took the lock over.
pub fn chunk_key(id: UploadId, offset: u64, holder: &str) -> String {
    format!("uploads/{id}/{offset:020}.{holder}")
}

/// A chunk's expected SHA-256 (the client's `Upload-Checksum: sha256 <base64 digest>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum(pub [u8; 32]);

#[derive(Debug, thiserror::Error)]
pub enum TusError {
    #[error("no such upload")]
    NotFound,
    #[error("the upload is at offset {current}")]
    OffsetMismatch { current: u64 },
    #[error("another request is writing to this upload")]
    Locked,
    #[error("the upload exceeds the bucket's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the chunk goes past the upload's length; {remaining} bytes remain")]
    PastLength { remaining: u64 },
    #[error("the chunk does not match its checksum")]
    ChecksumMismatch,
    #[error("the upload already has {MAX_CHUNKS} chunks")]
    TooManyChunks,
    #[error("the upload has ended")]
    Ended(Box<Upload>),
    #[error("the upload is empty")]
    Empty,
    /// The body ended early (the client went away): the partial chunk is discarded.
    #[error("the chunk could not be read: {0}")]
    Body(String),
    /// The completed file was refused by its bucket's checks.
    #[error(transparent)]
    Refused(UploadError),
    /// The upload is encrypted (or its bucket encrypts) but its master key is not configured.
    #[error("the upload's master key is not available")]
    KeyMissing(#[source] crate::files::store::master_keys::KeyError),
    /// A stored chunk failed its integrity check on completion: the upload ended as failed.
    #[error("a stored chunk of the upload is damaged")]
    Corrupt,
    #[error("the upload could not be stored")]
    Storage(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What creating an upload needs.
#[derive(Debug)]
pub struct Creation {
    pub bucket: Arc<Bucket>,
    pub length: u64,
    /// Every `Upload-Metadata` pair.
    pub metadata: Map<String, Value>,
    pub owner: Option<String>,
    pub origin: Origin,
}

/// One `PATCH` body and what the client said about it.
#[derive(Debug)]
pub struct Chunk<S> {
    pub offset: u64,
    pub checksum: Option<Checksum>,
    /// `Content-Length`, when sent: refused at once if it goes past the upload's length.
    pub declared: Option<u64>,
    pub body: S,
}

impl Files {
    fn upload_ttl(&self) -> time::Duration {
        time::Duration::try_from(self.settings.upload_ttl.0).unwrap_or(time::Duration::DAY)
    }

    /// Records a new upload.
    pub async fn create_upload(&self, c: Creation) -> Result<Upload, TusError> {
        let limit = c.bucket.policy.max_size.min(self.settings.max_upload_bytes);
        if c.length > limit {
            return Err(TusError::TooLarge { limit });
        }
        if c.length == 0 {
            return Err(TusError::Empty);
        }
        let at = now();
        let new = NewUpload {
            id: UploadId::new(),
            bucket: c.bucket.name.clone(),
            owner: c.owner,
            length: c.length,
            metadata: Value::Object(c.metadata),
            actor: c.origin.actor.id.clone(),
            created_at: at,
            expires_at: at + self.upload_ttl(),
            encryption: self.new_upload_key(&c.bucket)?,
        };
        let audit = c.origin.event_on(
            "upload.create",
            format!("upload:{}", new.id),
            json!({"bucket": new.bucket, "length": new.length, "owner": new.owner}),
        );
        Ok(self.store().insert_upload(new, audit).await?)
    }

    /// An upload clients can still see: not terminated and not expired.
    pub async fn live_upload(&self, id: UploadId) -> StoreResult<Option<Upload>> {
        let upload = self.store().get_upload(id).await?;
        Ok(upload.filter(|u| u.status != UploadStatus::Terminated && u.expires_at > now()))
    }

    /// Appends one chunk at `chunk.offset`; completes the upload when it was the last one.
    /// Returns the upload as it is afterwards.
    pub async fn append<S, E>(
        &self,
        id: UploadId,
        chunk: Chunk<S>,
        origin: Origin,
    ) -> Result<Upload, TusError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        // Cheap checks first, so a doomed request does not take the lock…
        let (offset, declared) = (chunk.offset, chunk.declared);
        self.writable(id, offset, declared).await?;
        let lock = UploadLock::acquire(self.store(), id)
            .await?
            .ok_or(TusError::Locked)?;
        // …and again under the lock: another request may have appended in between.
        let result = match self.writable(id, offset, declared).await {
            Ok(upload) => self.append_locked(upload, chunk, &lock, origin).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        result
    }

    async fn writable(
        &self,
        id: UploadId,
        offset: u64,
        declared: Option<u64>,
    ) -> Result<Upload, TusError> {
        let upload = self.live_upload(id).await?.ok_or(TusError::NotFound)?;
        if upload.status != UploadStatus::Active {
            return Err(TusError::Ended(Box::new(upload)));
        }
        if offset != upload.offset {
            return Err(TusError::OffsetMismatch {
                current: upload.offset,
            });
        }
        if upload.chunks >= MAX_CHUNKS {
            return Err(TusError::TooManyChunks);
        }
        let remaining = upload.length - upload.offset;
        if declared.is_some_and(|n| n > remaining) {
            return Err(TusError::PastLength { remaining });
        }
        Ok(upload)
    }

    async fn append_locked<S, E>(
        &self,
        mut upload: Upload,
        chunk: Chunk<S>,
        lock: &UploadLock,
        origin: Origin,
    ) -> Result<Upload, TusError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let remaining = upload.length - upload.offset;
        // Before any byte is read: without its key, no chunk of this upload can be stored.
        let dek = self.upload_key(&upload)?;
        // A client that disconnects mid-chunk ends the body early: tus would let us keep the
        // bytes that arrived, but we discard the partial chunk (its temporary file is
        // removed) and leave the offset where it was. The client resends the whole chunk.
        let body = idle_limited(chunk.body, IDLE_TIMEOUT);
        let received = receive(body, &self.storage.temp_dir(), remaining)
            .await
            .map_err(|e| match e {
                ReceiveError::TooLarge { .. } => TusError::PastLength { remaining },
                ReceiveError::Body(detail) => TusError::Body(detail),
                ReceiveError::Io(e) => TusError::Storage(e),
            })?;
        if let Some(expected) = chunk.checksum
            && hex::encode(expected.0) != received.sha256
        {
            return Err(TusError::ChecksumMismatch);
        }
        if received.size == 0 {
            return Ok(upload);
        }
        let received = self.seal_chunk(dek.as_ref(), received).await?;
        let stored = UploadChunk {
            offset: upload.offset,
            size: received.size,
            key: chunk_key(upload.id, upload.offset, lock.holder()),
            sha256: received.sha256.clone(),
        };
        self.storage
            .put_received(&stored.key, received)
            .await
            .map_err(TusError::Storage)?;
        let result = if stored.offset + stored.size == upload.length {
            let dek = dek.as_ref();
            self.complete(&upload, stored.clone(), dek, lock, origin)
                .await
        } else {
            self.advance(&mut upload, &stored, lock)
                .await
                .map(|()| upload)
        };
        if result.is_err() {
            // Not recorded: the chunk must not linger (the sweep would get it eventually).
            let _ = self.storage.delete(&stored.key).await;
        }
        result
    }

    async fn advance(
        &self,
        upload: &mut Upload,
        chunk: &UploadChunk,
        lock: &UploadLock,
    ) -> Result<(), TusError> {
        let at = now();
        let expires_at = at + self.upload_ttl();
        let advanced = self
            .store()
            .advance_upload(Advance {
                id: upload.id,
                holder: lock.holder(),
                chunk,
                now: at,
                expires_at,
            })
            .await?;
        if !advanced {
            // The lock lapsed and another request took it (or the upload was terminated).
            return Err(TusError::Locked);
        }
        upload.offset += chunk.size;
        upload.chunks += 1;
        upload.expires_at = expires_at;
        Ok(())
    }

    /// Terminates an upload: hidden at once, its chunks deleted.
    pub async fn terminate_upload(&self, id: UploadId, origin: Origin) -> Result<(), TusError> {
        let lock = UploadLock::acquire(self.store(), id)
            .await?
            .ok_or(TusError::Locked)?;
        let audit = origin.event_on("upload.terminate", format!("upload:{id}"), json!({}));
        let terminated = self
            .store()
            .terminate_upload(id, lock.holder(), now(), audit)
            .await;
        match terminated {
            Ok(true) => {}
            Ok(false) => {
                lock.release().await;
                return Err(TusError::NotFound);
            }
            Err(e) => {
                lock.release().await;
                return Err(e.into());
            }
        }
        // The row is expired now: if this clean-up fails, the sweep finishes it.
        self.purge_upload(id).await;
        lock.release().await;
        Ok(())
    }

    /// Deletes an upload's chunks, then its row; failures are left to the next sweep.
    pub(in crate::files) async fn purge_upload(&self, id: UploadId) -> bool {
        if let Err(e) = self.storage.delete_prefix(&uploads_prefix(id)).await {
            tracing::warn!(upload = %id, error = %e, "cannot delete an upload's chunks");
            return false;
        }
        match self.store().purge_upload(id).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::warn!(upload = %id, error = %e, "cannot forget an upload");
                false
            }
        }
    }
}

/// `body`, ending with an error when no data arrives for `idle`.
fn idle_limited<S, E>(body: S, idle: Duration) -> impl Stream<Item = Result<Bytes, String>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    futures::stream::unfold(Some(Box::pin(body)), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(body))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("no data for {}s", idle.as_secs())), None)),
        }
    })
}

/// The name and the file metadata an upload's `Upload-Metadata` pairs give.
pub fn file_metadata(upload: &Upload) -> (Option<String>, Value) {
    let mut pairs = upload.metadata.as_object().cloned().unwrap_or_default();
    let name = pairs
        .get("filename")
        .and_then(Value::as_str)
        .map(str::to_owned);
    for key in RESERVED_KEYS {
        pairs.remove(key);
    }
    (name, Value::Object(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_stalls_ends_with_an_error() {
        let stalled = futures::stream::iter([Ok::<_, String>(Bytes::from_static(b"abc"))])
            .chain(futures::stream::pending());
        let got: Vec<_> = idle_limited(stalled, Duration::from_millis(20))
            .collect()
            .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_deref(), Ok(&b"abc"[..]));
        assert!(got[1].as_ref().is_err_and(|e| e.starts_with("no data")));
    }

    #[test]
    fn chunk_keys() {
        let id: UploadId = "01900000-0000-7000-8000-000000000000".parse().unwrap();
        assert_eq!(
            chunk_key(id, 1024, "h1"),
            "uploads/01900000-0000-7000-8000-000000000000/00000000000000001024.h1"
        );
    }
}
