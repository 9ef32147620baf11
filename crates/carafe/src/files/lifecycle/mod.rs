//! Clean-up over time: temporary files, unrecorded uploads and unfinished S3 multipart uploads
//! a crash left behind (every instance sweeps its own temporary directory, and the shared
//! `incoming/` area and multipart records), and bucket retention (one instance at a time, as
//! the holder of the `files-retention` lease), which deletes files older than their bucket's
//! `retention_days` unless they are under legal hold.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::files::FileId;
use carafe_core::time::now;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Files, incoming_key};
use crate::context::Actor;

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
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const LEADER: &str = "files-retention";
const BATCH: u32 = 500;

impl Files {
    /// Sweeps leftovers at start and then every ten minutes, and expired resumable uploads
    /// more often (see `receive::tus::sweep_interval`), until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let every = super::receive::tus::sweep_interval(self.settings.upload_ttl.0);
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

    /// Applies bucket retention while this instance leads, every minute, until `stop`.
    pub async fn retain(self: Arc<Self>, instance: String, stop: CancellationToken) {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let at = now();
            let until = at + RETENTION_EVERY * 2;
            match self.store().try_lead(LEADER, &instance, until, at).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "files retention: leader election failed");
                    continue;
                }
            }
            match self.apply_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "deleted files past their bucket's retention"),
                Err(e) => tracing::warn!(error = %e, "files retention failed"),
            }
        }
        let _ = self.store().resign(LEADER, &instance).await;
    }

    /// Deletes every file past its bucket's retention (not under legal hold); returns how many.
    pub async fn apply_retention(&self) -> carafe_core::StoreResult<u64> {
        let system = Actor {
            id: "system".into(),
            request_id: None,
        };
        let mut total = 0;
        for bucket in self.store().list_buckets().await? {
            let Some(days) = bucket.policy.retention_days else {
                continue;
            };
            let before = now() - time::Duration::days(i64::from(days));
            loop {
                let ids = self
                    .store()
                    .expired_files(&bucket.name, before, BATCH)
                    .await?;
                for id in &ids {
                    let event = system.event(
                        "file.expire",
                        Some(format!("file:{id}")),
                        json!({"bucket": bucket.name, "retention_days": days}),
                    );
                    if self
                        .store()
                        .delete_file(*id, now(), self.purge_job(*id), event)
                        .await?
                        .is_some()
                    {
                        self.forget_file(*id).await;
                        total += 1;
                    }
                }
                if ids.len() < BATCH as usize {
                    break;
                }
            }
        }
        if total > 0 {
            self.wake();
        }
        Ok(total)
    }
}
