//! Bucket retention: files older than their bucket's `retention_days` are deleted (unless
//! under legal hold), by one instance at a time — the holder of the `files-retention` lease —
//! every minute.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::time::now;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::context::Actor;
use crate::files::Files;

const RETENTION_EVERY: Duration = Duration::from_secs(60);
const LEADER: &str = "files-retention";
const BATCH: u32 = 500;

impl Files {
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
                    if self.remove(*id, event).await? {
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
