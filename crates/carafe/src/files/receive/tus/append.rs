//! Appending a chunk to a resumable upload. Cheap checks come first, so a doomed request
//! does not take the upload's lock, and again under the lock. The chunk is received to a
//! synced temporary file and checked against the client's checksum, sealed when the upload
//! is encrypted, and stored as its own object; only then does the offset advance (fenced by
//! the lock holder and the expected offset), so an acknowledged byte is never lost. The last
//! chunk completes the upload (see `complete`).

use std::time::Duration;

use bytes::Bytes;
use carafe_core::files::{Advance, Upload, UploadChunk, UploadId, UploadStatus};
use carafe_core::time::now;
use futures::{Stream, StreamExt};

use super::lock::UploadLock;
use super::{Chunk, MAX_CHUNKS, TusError, chunk_key};
use crate::context::{Origin, Principal};
use crate::files::Files;
use crate::files::receive::body::{ReceiveError, receive};

/// A chunk whose body stops arriving for this long is abandoned: a client whose network died
/// without closing the connection must not keep the upload locked (the lock is renewed for
/// as long as the request lives).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Files {
    /// Appends one chunk at `chunk.offset` to an upload the caller may see; completes the
    /// upload when it was the last one. Returns the upload as it is afterwards.
    pub async fn append<S, E>(
        &self,
        principal: &Principal,
        id: UploadId,
        chunk: Chunk<S>,
        origin: Origin,
    ) -> Result<Upload, TusError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.visible_upload(principal, id).await?;
        self.append_chunk(id, chunk, origin).await
    }

    /// Appends one chunk (the caller's right to has been checked).
    pub(super) async fn append_chunk<S, E>(
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
}
