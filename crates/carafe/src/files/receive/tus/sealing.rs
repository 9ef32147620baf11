//! Resumable uploads to encrypting buckets are encrypted from their first chunk: no byte of
//! them ever reaches storage in the clear, even if the upload is never finished.
//!
//! An upload to such a bucket gets its own random data key when it is created, wrapped under
//! the master key exactly like a file's and kept on its row (so `carafe keys rotate-master`
//! rewraps it too). Each chunk is received and checked against its checksum in plaintext,
//! then sealed on its own — a complete object in the files' segment format, with its own
//! nonce prefix — so appending never touches an earlier chunk. Offsets, sizes and the hashes
//! recorded for chunks stay those of the plaintext.
//!
//! On completion every chunk (encrypted or not) is read back and checked against the size
//! and hash recorded when it arrived. Decryption already catches flipped bytes and cut
//! objects; the recorded hash also catches a whole chunk object swapped for another one of
//! the same upload, which would decrypt fine. A chunk that fails is damage at rest: the upload
//! ends as failed instead of becoming a file.

use std::io;

use carafe_core::files::{Bucket, FileEncryption, Upload, UploadChunk};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::TusError;
use crate::files::Files;
use crate::files::store::crypto::DataKey;
use crate::files::store::sealed;
use crate::files::store::storage::ByteStream;
use crate::files::store::storage::temp::Received;

impl Files {
    /// The wrapped data key for a new upload to `bucket`: `None` when the bucket stores in
    /// the clear.
    pub(super) fn new_upload_key(
        &self,
        bucket: &Bucket,
    ) -> Result<Option<FileEncryption>, TusError> {
        if !bucket.policy.encrypt {
            return Ok(None);
        }
        let (_, enc) = self.keys.new_data_key().map_err(TusError::KeyMissing)?;
        Ok(Some(enc))
    }

    /// The data key that seals `upload`'s chunks (`None` for an upload in the clear).
    pub(super) fn upload_key(&self, upload: &Upload) -> Result<Option<DataKey>, TusError> {
        upload
            .encryption
            .as_ref()
            .map(|e| self.keys.unwrap(e))
            .transpose()
            .map_err(TusError::KeyMissing)
    }

    /// A received, checked chunk as it is to be stored: sealed under `dek` when there is one.
    pub(super) async fn seal_chunk(
        &self,
        dek: Option<&DataKey>,
        received: Received,
    ) -> Result<Received, TusError> {
        match dek {
            None => Ok(received),
            Some(dek) => sealed::seal_received(&self.storage.temp_dir(), dek, received)
                .await
                .map_err(TusError::Storage),
        }
    }

    /// The plaintext of a stored chunk, ending with an `InvalidData` error unless it is
    /// exactly the bytes recorded for it.
    pub(super) async fn read_chunk(
        &self,
        chunk: &UploadChunk,
        dek: Option<&DataKey>,
    ) -> io::Result<ByteStream> {
        let stream = sealed::read(&self.storage, &chunk.key, dek, None, chunk.size).await?;
        Ok(verified(stream, chunk.size, chunk.sha256.clone()))
    }
}

/// `stream`, followed by an `InvalidData` error if its bytes are not `size` long with this
/// hex SHA-256. Stops at the first error.
fn verified(stream: ByteStream, size: u64, sha256: String) -> ByteStream {
    struct State {
        stream: ByteStream,
        hasher: Sha256,
        seen: u64,
    }
    let state = State {
        stream,
        hasher: Sha256::new(),
        seen: 0,
    };
    futures::stream::unfold(Some(state), move |state| {
        let sha256 = sha256.clone();
        async move {
            let mut s = state?;
            match s.stream.next().await {
                Some(Ok(bytes)) => {
                    s.hasher.update(&bytes);
                    s.seen += bytes.len() as u64;
                    Some((Ok(bytes), Some(s)))
                }
                Some(Err(e)) => Some((Err(e), None)),
                None if s.seen == size && hex::encode(s.hasher.finalize()) == sha256 => None,
                None => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "an upload's chunk is not what was received",
                    );
                    Some((Err(e), None))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::TryStreamExt;

    use super::*;

    fn stream(parts: &[&'static [u8]]) -> ByteStream {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn chunks_must_be_what_was_received() {
        let hash = hex::encode(Sha256::digest(b"hello world"));
        let ok: Vec<Bytes> = verified(stream(&[b"hello ", b"world"]), 11, hash.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(ok.concat(), b"hello world");
        let damaged: [(&[&'static [u8]], u64); 3] = [
            (&[b"hello ", b"World"], 11),
            (&[b"hello "], 11),
            (&[b"hello ", b"world"], 12),
        ];
        for (parts, size) in damaged {
            let err = verified(stream(parts), size, hash.clone())
                .try_collect::<Vec<Bytes>>()
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }
}
