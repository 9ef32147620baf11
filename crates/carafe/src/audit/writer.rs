//! A batching audit writer, for events that must not cost their request a commit of its own
//! (every file download is audited). Events queue in a bounded channel — a full queue slows
//! the requests that feed it rather than dropping events — and are written in one transaction
//! per batch. `flush` waits until everything queued before it is written (used at shutdown).

use std::sync::Arc;
use std::time::Duration;

use carafe_core::Store;
use carafe_core::audit::NewAuditEvent;
use tokio::sync::{Notify, mpsc, oneshot};

/// Events waiting to be written before senders wait.
const QUEUE: usize = 10_000;
/// Most events per transaction.
const BATCH: usize = 1_000;
/// How long a batch stays open for more events after its first one arrives: under load this
/// turns hundreds of small commits a second (each one synced) into a few large ones; when
/// idle an event waits this long at most. A flush closes the batch at once.
const LINGER: Duration = Duration::from_millis(20);

enum Msg {
    Event(NewAuditEvent),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    /// Wakes the writer before its window closes (a flush is waiting).
    hurry: Arc<Notify>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditWriter")
    }
}

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let hurry = Arc::new(Notify::new());
        tokio::spawn(run(store, rx, hurry.clone()));
        AuditWriter { tx, hurry }
    }

    pub async fn record(&self, event: NewAuditEvent) {
        if self.tx.send(Msg::Event(event)).await.is_err() {
            tracing::error!("the audit writer has stopped; an event was not recorded");
        }
    }

    /// Waits until every event recorded before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            self.hurry.notify_one();
            let _ = wait.await;
        }
    }
}

/// A window opens with the first event the writer receives; the writer then sleeps until the
/// window closes (or a flush arrives) and takes everything queued meanwhile. Waiting on the
/// channel instead would wake the writer, on another thread, for every event.
async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, hurry: Arc<Notify>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    // A full batch was written last time: more are queued, so no window is waited for.
    let mut behind = false;
    while let Some(first) = rx.recv().await {
        let flush = matches!(first, Msg::Flush(_));
        take(first, &mut batch, &mut waiting);
        if !behind && !flush {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = hurry.notified() => {}
            }
        }
        // Up to a batch, stopping at a flush so that it is answered once what precedes it is
        // written.
        while batch.len() < BATCH && waiting.is_empty() {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut batch, &mut waiting),
                Err(_) => break,
            }
        }
        behind = batch.len() >= BATCH;
        if !batch.is_empty() {
            write(&store, &batch).await;
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(msg: Msg, batch: &mut Vec<NewAuditEvent>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Event(e) => batch.push(e),
        Msg::Flush(done) => waiting.push(done),
    }
}

/// Writes a batch, retrying while the database is unavailable (up to about a minute).
async fn write(store: &Arc<dyn Store>, batch: &[NewAuditEvent]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=10 {
        match store.append_audits(batch).await {
            Ok(()) => return,
            Err(e) if attempt < 10 => {
                tracing::warn!(error = %e, attempt, "audit batch not written; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch lost");
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

        // One event is written once its window closes, with nobody asking.
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
