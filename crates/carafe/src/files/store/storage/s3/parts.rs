//! Large received files go up to S3 as multipart uploads Carafe drives itself, through
//! `object_store`'s `MultipartStore`, so the upload id is in hand: S3 keeps the parts of an
//! upload nobody completes or aborts (unseen, and billed), and `object_store` cannot list
//! uploads to find them later. So the id is recorded in the database before the first part is
//! sent and forgotten once the upload is completed or aborted. A failed upload is aborted at
//! once; one whose caller goes away is aborted by a task its guard spawns; one a crash
//! interrupts keeps its record, and the sweep aborts it once past a cut-off no live upload is
//! expected to reach. (Only a crash between S3 creating an upload and Carafe recording it escapes, and
//! that upload has no parts: it holds no bytes.) Memory stays bounded whatever the size: one
//! buffer per part in flight.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::StoreError;
use carafe_core::files::MultipartRecord;
use carafe_core::time::now;
use object_store::PutPayload;
use object_store::multipart::{MultipartStore, PartId};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::{S3Storage, io_error};
use crate::files::store::drain::{self, Removal};
use crate::files::store::storage::temp::Received;

/// Part size (S3 needs at least 5 MiB for every part but the last).
const PART: u64 = 8 * 1024 * 1024;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Records the sweep reads at a time.
const SWEEP_BATCH: u32 = 100;

fn store_error(e: StoreError) -> io::Error {
    io::Error::other(e)
}

/// An upload not yet completed or aborted. Dropped unsettled (its caller went away), it aborts
/// the upload and forgets the record in a task of its own; with no runtime left to run that
/// (the process is stopping), the record stays for the sweep.
struct Unsettled {
    s3: Option<S3Storage>,
    key: String,
    upload_id: String,
}

impl Unsettled {
    fn settle(mut self) {
        self.s3 = None;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(s3) = self.s3.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let upload_id = std::mem::take(&mut self.upload_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { s3.abandon(&key, &upload_id).await });
        }
    }
}

impl S3Storage {
    /// Sends a received file (over the single-PUT size) to `key` as a recorded multipart upload.
    pub(super) async fn put_in_parts(&self, key: &str, received: &Received) -> io::Result<()> {
        let upload_id = self
            .store
            .create_multipart(&self.path(key))
            .await
            .map_err(io_error)?;
        let guard = Unsettled {
            s3: Some(self.clone()),
            key: key.to_owned(),
            upload_id: upload_id.clone(),
        };
        let result = match self.send_recorded(key, &upload_id, received).await {
            Ok(()) => {
                // Stored all the same if this fails: the record is swept in time (S3 answers
                // `NoSuchUpload` to the abort of a completed upload, which counts as done).
                if let Err(e) = self.records.forget_multipart(key, &upload_id).await {
                    tracing::warn!(key, error = %e, "cannot forget a completed multipart upload");
                }
                Ok(())
            }
            Err(e) => {
                self.abandon(key, &upload_id).await;
                Err(e)
            }
        };
        guard.settle();
        result
    }

    async fn send_recorded(
        &self,
        key: &str,
        upload_id: &str,
        received: &Received,
    ) -> io::Result<()> {
        let record = MultipartRecord {
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            started_at: now(),
        };
        self.records
            .record_multipart(record)
            .await
            .map_err(store_error)?;
        let parts = self.send_parts(key, upload_id, received).await?;
        self.store
            .complete_multipart(&self.path(key), &upload_id.to_owned(), parts)
            .await
            .map_err(io_error)?;
        Ok(())
    }

    /// Reads the file part by part, each into its own buffer, with at most `PARTS_IN_FLIGHT`
    /// parts (and buffers) out at once. Parts still out when this fails or is dropped are
    /// cancelled with their `JoinSet`.
    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        received: &Received,
    ) -> io::Result<Vec<PartId>> {
        let mut file = tokio::fs::File::open(received.path()).await?;
        let count = usize::try_from(received.size.div_ceil(PART)).map_err(io::Error::other)?;
        let mut parts: Vec<Option<PartId>> = vec![None; count];
        let mut sending = JoinSet::new();
        let mut left = received.size;
        for idx in 0..count {
            if sending.len() == PARTS_IN_FLIGHT {
                let (i, part) = joined(sending.join_next().await)?;
                parts[i] = Some(part);
            }
            let len = PART.min(left);
            left -= len;
            let mut buf = vec![0u8; len as usize];
            file.read_exact(&mut buf).await?;
            let (store, path, id) = (self.store.clone(), self.path(key), upload_id.to_owned());
            sending.spawn(async move {
                let part = store.put_part(&path, &id, idx, PutPayload::from(buf)).await;
                part.map(|p| (idx, p)).map_err(io_error)
            });
        }
        while !sending.is_empty() {
            let (i, part) = joined(sending.join_next().await)?;
            parts[i] = Some(part);
        }
        parts
            .into_iter()
            .map(|p| p.ok_or_else(|| io::Error::other("a part was not sent")))
            .collect()
    }

    /// Sends part `number` (1-based) of upload `upload_id` at `key`; returns its ETag.
    pub async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        bytes: Bytes,
    ) -> io::Result<String> {
        let idx = number
            .checked_sub(1)
            .ok_or_else(|| io::Error::other("part numbers start at 1"))?;
        self.store
            .put_part(
                &self.path(key),
                &upload_id.to_owned(),
                idx as usize,
                PutPayload::from(bytes),
            )
            .await
            .map(|p| p.content_id)
            .map_err(io_error)
    }

    /// Aborts an upload and forgets its record. An upload that cannot be aborted now keeps
    /// its record, for the sweep to retry; true when it is gone.
    async fn abandon(&self, key: &str, upload_id: &str) -> bool {
        let done = match self.abort_multipart(key, upload_id).await {
            Ok(()) => self
                .records
                .forget_multipart(key, upload_id)
                .await
                .map_err(store_error),
            Err(e) => Err(e),
        };
        match done {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(key, upload_id, error = %e,
                    "cannot abort a multipart upload now; the sweep retries it");
                false
            }
        }
    }

    /// Aborts and forgets the recorded multipart uploads started more than `age` ago: a live
    /// upload ends (completed, or aborted by itself) well within it, so these were left by a
    /// crash. Returns how many went; one that cannot be aborted now stays for the next sweep,
    /// and the others are still swept.
    pub async fn sweep_multiparts(&self, age: Duration) -> io::Result<u64> {
        let age = time::Duration::try_from(age).map_err(io::Error::other)?;
        let Some(before) = now().checked_sub(age) else {
            return Ok(0);
        };
        let list = |limit| self.records.stale_multiparts(before, limit);
        let key = |r: &MultipartRecord| (r.key.clone(), r.upload_id.clone());
        let remove = |r: MultipartRecord| async move {
            match self.abandon(&r.key, &r.upload_id).await {
                true => Removal::Removed,
                false => Removal::Failed,
            }
        };
        drain::drain(SWEEP_BATCH, list, key, remove)
            .await
            .map_err(store_error)
    }
}

fn joined<T>(next: Option<Result<io::Result<T>, tokio::task::JoinError>>) -> io::Result<T> {
    match next {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(io::Error::other(e)),
        None => Err(io::Error::other("no part in flight")),
    }
}
