//! Resumable uploads with the tus 1.0 protocol, for large files over flaky networks and for
//! proxies that cap request bodies: a client creates an upload, sends it in chunks (each one
//! a `PATCH`), and after an interruption asks how far it got and goes on from there.
//!
//! This module creates, shows and terminates uploads, for the callers who may see them (API
//! keys with `files`; end users only their own). Each chunk is received to a synced
//! temporary file, checked against the client's checksum, and stored as its own object under
//! `uploads/<id>/`; only then does the upload's offset advance, so an acknowledged byte is
//! never lost (`append`). Appending needs the upload's lock (in the database, so it holds
//! across instances: `lock`) and every advance is fenced by the lock holder and the expected
//! offset: two requests can never both write. When the last byte arrives the chunks are read
//! back in order into one received file that goes through `Files::accept` — the same checks
//! and processing as any other upload (`complete`). Uploads to encrypting buckets seal every
//! chunk before it is stored (`sealing`). Expired uploads are deleted by the sweep
//! (`lifecycle::expired`).

pub mod append;
pub mod complete;
pub mod lock;
pub mod sealing;

use bytes::Bytes;
use carafe_core::files::{NewUpload, Upload, UploadId, UploadStatus};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use carafe_core::{StoreError, StoreResult};
use futures::Stream;
use serde_json::{Map, Value, json};

use super::accept::{UploadError, owner_for};
use crate::context::{Denied, Origin, Principal};
use crate::files::Files;
use lock::UploadLock;

/// Chunks one upload may have: a client sending tiny chunks must not make the final
/// assembly read a million objects.
pub const MAX_CHUNKS: u32 = 10_000;

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
    #[error(transparent)]
    Denied(#[from] Denied),
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
    /// Refused as any upload would be: by its bucket's checks once complete, or at creation
    /// (an owner or a bucket that cannot be).
    #[error(transparent)]
    Refused(UploadError),
    /// The upload was created, but its first chunk (sent with the creation) failed: the
    /// upload is there to resume.
    #[error("the upload's first chunk failed: {error}")]
    FirstChunk {
        upload: UploadId,
        error: Box<TusError>,
    },
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
    pub length: u64,
    /// Every `Upload-Metadata` pair (`bucket` names the bucket; default `default`).
    pub metadata: Map<String, Value>,
    /// The end user the file is to belong to (API keys only: a token's user owns its uploads).
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

    /// Records a new upload; with `first`, appends its first chunk too.
    pub async fn create_upload<S, E>(
        &self,
        principal: &Principal,
        c: Creation,
        first: Option<Chunk<S>>,
    ) -> Result<Upload, TusError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        principal.require(Scope::Files)?;
        let owner = owner_for(principal, c.owner).map_err(TusError::Refused)?;
        let bucket = c.metadata.get("bucket").and_then(Value::as_str);
        let bucket = self
            .named_upload_bucket(bucket)
            .await
            .map_err(TusError::Refused)?;
        let limit = bucket.policy.max_size.min(self.settings.max_upload_bytes);
        if c.length > limit {
            return Err(TusError::TooLarge { limit });
        }
        if c.length == 0 {
            return Err(TusError::Empty);
        }
        let at = now();
        let new = NewUpload {
            id: UploadId::new(),
            bucket: bucket.name.clone(),
            owner,
            length: c.length,
            metadata: Value::Object(c.metadata),
            actor: c.origin.actor.id.clone(),
            created_at: at,
            expires_at: at + self.upload_ttl(),
            encryption: self.new_upload_key(&bucket)?,
        };
        let audit = c.origin.event_on(
            "upload.create",
            format!("upload:{}", new.id),
            json!({"bucket": new.bucket, "length": new.length, "owner": new.owner}),
        );
        let upload = self.store().insert_upload(new, audit).await?;
        let Some(chunk) = first else {
            return Ok(upload);
        };
        let id = upload.id;
        self.append_chunk(id, chunk, c.origin)
            .await
            .map_err(|e| TusError::FirstChunk {
                upload: id,
                error: Box::new(e),
            })
    }

    /// An upload clients can still see: not terminated and not expired.
    async fn live_upload(&self, id: UploadId) -> StoreResult<Option<Upload>> {
        let upload = self.store().get_upload(id).await?;
        Ok(upload.filter(|u| u.status != UploadStatus::Terminated && u.expires_at > now()))
    }

    /// A live upload the caller may see (otherwise not found).
    pub async fn visible_upload(
        &self,
        principal: &Principal,
        id: UploadId,
    ) -> Result<Upload, TusError> {
        principal.require(Scope::Files)?;
        match self.live_upload(id).await? {
            Some(u) if principal.may_see(Scope::Files, u.owner.as_deref()) => Ok(u),
            _ => Err(TusError::NotFound),
        }
    }

    /// Terminates an upload the caller may see: hidden at once, its chunks deleted.
    pub async fn terminate_upload(
        &self,
        principal: &Principal,
        id: UploadId,
        origin: Origin,
    ) -> Result<(), TusError> {
        self.visible_upload(principal, id).await?;
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

    #[test]
    fn chunk_keys() {
        let id: UploadId = "01900000-0000-7000-8000-000000000000".parse().unwrap();
        assert_eq!(
            chunk_key(id, 1024, "h1"),
            "uploads/01900000-0000-7000-8000-000000000000/00000000000000001024.h1"
        );
    }
}
