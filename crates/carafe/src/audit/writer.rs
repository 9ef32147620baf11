//! The audit writer, for events that must not cost their request a commit of its own (every
//! file download is audited). Events go into the group commit (`group_commit`): each batch is
//! one transaction, the first event after a quiet spell is written at once, and events that
//! arrive while a batch commits share the next. The queue is bounded — a full queue slows the
//! requests that feed it rather than dropping events. `flush` waits until everything queued
//! before it is written (used at shutdown).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::audit::NewAuditEvent;
use carafe_core::{Store, StoreError, StoreResult};

use crate::group_commit::{BatchWrite, GroupCommit};

/// Most events per transaction.
const BATCH: usize = 1_000;

#[derive(Clone)]
pub struct AuditWriter {
    queue: GroupCommit<NewAuditEvent, ()>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditWriter")
    }
}

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        AuditWriter {
            queue: GroupCommit::spawn("audit", BATCH, Append { store }),
        }
    }

    /// Queues `event`; it is written with the next batch.
    pub async fn record(&self, event: NewAuditEvent) {
        self.queue.send(vec![event]).await;
    }

    /// Waits until every event recorded before this call is written.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

struct Append {
    store: Arc<dyn Store>,
}

#[async_trait]
impl BatchWrite<NewAuditEvent, ()> for Append {
    /// Writes a batch, retrying while the database is unavailable (up to about a minute).
    async fn write(&self, batch: &[NewAuditEvent]) -> StoreResult<Vec<()>> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.store.append_audits(batch).await {
                Ok(()) => return Ok(vec![(); batch.len()]),
                Err(e @ StoreError::Unavailable(_)) if attempt < 10 => {
                    tracing::warn!(error = %e, attempt, "audit batch not written; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "audit events not written");
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use carafe_core::audit::AuditFilter;
    use carafe_core::page::PageRequest;
    use carafe_store_sqlite::SqliteStore;
    use serde_json::json;

    use super::*;

    fn event(n: usize) -> NewAuditEvent {
        NewAuditEvent {
            at: carafe_core::time::now(),
            actor: "system".into(),
            action: "test.event".into(),
            target: Some(format!("test:{n}")),
            request_id: None,
            details: json!({"n": n}).into(),
        }
    }

    async fn stored(store: &Arc<dyn Store>) -> Vec<String> {
        let page = store
            .list_audit(&AuditFilter::default(), &PageRequest::first(10_000))
            .await
            .unwrap();
        page.items.into_iter().filter_map(|e| e.target).collect()
    }

    #[tokio::test]
    async fn events_are_written_without_a_flush_in_order_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("a.db"), 1)
                .await
                .unwrap(),
        );
        store.migrate().await.unwrap();
        let writer = AuditWriter::spawn(store.clone());

        // One event is written at once, with nobody asking.
        writer.record(event(0)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stored(&store).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::task::yield_now().await;
        }

        // More than a batch: after a flush, all of them, in order.
        for n in 1..=2_500 {
            writer.record(event(n)).await;
        }
        writer.flush().await;
        let targets = stored(&store).await;
        assert_eq!(targets.len(), 2_501);
        let expected: Vec<String> = (0..=2_500).rev().map(|n| format!("test:{n}")).collect();
        assert_eq!(targets, expected, "newest first, none lost or reordered");
    }
}
