//! How files and what uploads leave behind come to an end: deletion on request and legal
//! holds (`delete`), bucket retention (`retention`), upload sessions whose time is up
//! (`expired`), and here the sweep of what a crash left behind — temporary files, unrecorded
//! uploads and unfinished S3 multipart uploads (every instance sweeps its own temporary
//! directory, and the shared `incoming/` area and multipart records).

pub mod delete;
pub mod expired;
pub mod retention;

use std::sync::Arc;
use std::time::Duration;

use carafe_core::files::FileId;
use tokio_util::sync::CancellationToken;

use super::{Files, incoming_key};

/// Leftovers younger than this may belong to an upload in progress.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);
/// A recorded S3 multipart upload older than this was left by a crash, and the sweep aborts
/// it. Another instance sharing the database may still be sending one younger, and a large
/// file on a slow link takes long (5 GiB, the default upload limit, in 24 h is about 60 KB/s), so
/// the margin is wide; an abandoned upload's parts cost a day of storage at most. Not
/// `files.upload_ttl`: that is how long clients may take to resume, which an operator may
/// well shorten below the time a large send to S3 can take.
pub const ABANDONED_MULTIPART_AGE: Duration = Duration::from_secs(24 * 3600);
const SWEEP_EVERY: Duration = Duration::from_secs(600);

impl Files {
    /// Sweeps leftovers at start and then every ten minutes, and expired resumable uploads
    /// more often (see `expired::sweep_interval`), until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let every = expired::sweep_interval(self.settings.upload_ttl.0);
        let mut next_leftovers = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_leftovers {
                next_leftovers += SWEEP_EVERY;
                self.sweep_leftovers().await;
            }
            match self.sweep_direct().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "aborted expired direct uploads"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep expired direct uploads"),
            }
            match self.sweep_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed expired resumable uploads"),
                Err(e) => tracing::warn!(error = %e, "cannot sweep expired resumable uploads"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn sweep_leftovers(&self) {
        match self.storage.sweep_temp(LEFTOVER_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temporary upload files"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep temporary upload files"),
        }
        match self.storage.sweep_multiparts(ABANDONED_MULTIPART_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(aborted = n, "aborted abandoned multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep abandoned multipart uploads"),
        }
        match self.sweep_incoming(LEFTOVER_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed unrecorded uploads"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep unrecorded uploads"),
        }
    }

    /// Removes `incoming/` objects older than `age` that no live file row claims (a crash
    /// between storing an upload and recording it).
    pub async fn sweep_incoming(&self, age: Duration) -> anyhow::Result<u64> {
        let mut removed = 0;
        for name in self.storage.list_older("incoming", age).await? {
            let Ok(id) = name.parse::<FileId>() else {
                continue;
            };
            // A direct upload's bytes wait here for their `complete` (until the session expires).
            if self.store().get_file(id).await?.is_none()
                && self.store().get_direct(id).await?.is_none()
            {
                self.storage.delete(&incoming_key(id)).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
