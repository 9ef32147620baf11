//! Uploads whose time is up. A direct upload never completed has its S3 multipart upload
//! aborted and its bytes deleted; a resumable upload past its expiry has its chunks deleted
//! (finished and terminated ones are forgotten once their time is up too). Each is cleaned
//! on its own: one that cannot be cleaned now waits for a later sweep without holding up the
//! others.

use std::time::Duration;

use carafe_core::StoreResult;
use carafe_core::files::{DirectState, DirectUpload};
use carafe_core::time::now;

use crate::files::receive::direct::direct_key;
use crate::files::receive::tus::lock::UploadLock;
use crate::files::store::drain::{self, Removal};
use crate::files::{Files, incoming_key};

const DIRECT_BATCH: u32 = 200;

/// How often `Files::sweep` looks for expired uploads: often enough that an upload is gone
/// soon after its expiry, whatever the time to live.
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Files {
    /// Aborts and forgets expired sessions, oldest expiry first. Returns how many were
    /// removed. A session whose clean-up fails is logged and kept for the next sweep, and the
    /// sweep goes on with the others: one stuck session must not keep the rest forever.
    pub async fn sweep_direct(&self) -> anyhow::Result<u64> {
        let list = |limit| self.store().expired_directs(now(), limit);
        let remove = |session: DirectUpload| async move {
            let id = session.id;
            match self.remove_expired_direct(session).await {
                Ok(true) => Removal::Removed,
                Ok(false) => Removal::AlreadyGone,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e,
                        "cannot remove an expired direct upload now; the next sweep retries it");
                    Removal::Failed
                }
            }
        };
        Ok(drain::drain(DIRECT_BATCH, list, |s| s.id, remove).await?)
    }

    /// Removes one expired session: the multipart upload is aborted and any `incoming/` object
    /// no file claims is deleted, then the session is forgotten (last, so a failure before
    /// leaves it to retry). True when this call forgot it.
    async fn remove_expired_direct(&self, session: DirectUpload) -> anyhow::Result<bool> {
        let key = incoming_key(session.id);
        if session.state != DirectState::Completed
            && self.store().get_file(session.id).await?.is_none()
        {
            if let (Some(s3), Some(upload_id)) = (self.storage.s3(), &session.multipart) {
                s3.abort_multipart(&key, upload_id).await?;
            }
            self.storage.delete(&key).await?;
        }
        self.storage.delete(&direct_key(session.id)).await?;
        Ok(self.store().delete_direct(session.id).await?)
    }

    /// Deletes expired uploads (unfinished ones with their chunks, finished and terminated
    /// ones whose time is up). Uploads locked by a request in progress wait for the next
    /// sweep. Returns how many went.
    pub async fn sweep_uploads(&self) -> StoreResult<u64> {
        const BATCH: u32 = 100;
        let mut removed = 0;
        for _ in 0..10 {
            let expired = self.store().expired_uploads(now(), BATCH).await?;
            let mut progress = 0;
            for upload in &expired {
                let Some(lock) = UploadLock::acquire(self.store(), upload.id).await? else {
                    continue;
                };
                if self.purge_upload(upload.id).await {
                    progress += 1;
                }
                lock.release().await;
            }
            removed += progress;
            if expired.len() < BATCH as usize || progress == 0 {
                break;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_uploads_are_swept_often_enough_for_their_time_to_live() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
    }
}
