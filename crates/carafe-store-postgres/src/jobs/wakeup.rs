//! Cross-server wake-ups through `LISTEN`/`NOTIFY`, so a worker waiting on one server learns
//! at once of a job inserted (or a watched job changed) through another, instead of at its
//! next poll. They are hints only: a lost one costs latency, never correctness, because
//! polling the tables stays the truth.
//!
//! Writers collect topics (`queue:<name>`, `job:<id>`) in a [`Wakeups`] and send them as one
//! `pg_notify` inside their transaction: PostgreSQL delivers it only if the transaction
//! commits, and only after it has, so a woken listener always finds the change.

use std::collections::BTreeSet;
use std::time::Duration;

use carafe_core::StoreResult;
use carafe_core::jobs::{JobId, QueueName};
use carafe_core::store::WakeupSink;
use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};

use crate::map_err;

/// The channel every Carafe server listens on. Channels are per database, not per schema.
pub(crate) const CHANNEL: &str = "carafe_wakeup";

/// PostgreSQL refuses payloads of 8,000 bytes or more; past this we send `*` ("anything may
/// have changed") rather than split the list over several notifications.
const MAX_PAYLOAD: usize = 7900;

/// The topics one transaction touched, distinct and in a stable order.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    topics: BTreeSet<String>,
}

impl Wakeups {
    /// `queue` got work a worker may claim (or that changes what claiming finds).
    pub(crate) fn queue(&mut self, queue: &QueueName) {
        self.topics.insert(format!("queue:{queue}"));
    }

    /// Job `id` has new events.
    pub(crate) fn job(&mut self, id: JobId) {
        self.topics.insert(format!("job:{id}"));
    }

    /// The comma-separated payload, `*` when too long, `None` when there is nothing to say.
    /// Topics never contain commas: queue names are `[a-z0-9._-]` and ids are numbers.
    fn payload(&self) -> Option<String> {
        if self.topics.is_empty() {
            return None;
        }
        let len = self.topics.iter().map(|t| t.len() + 1).sum::<usize>() - 1;
        if len > MAX_PAYLOAD {
            return Some("*".to_owned());
        }
        Some(
            self.topics
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// Queues the notification in the caller's transaction (sent on commit, dropped on
    /// rollback). Call it last, just before committing: `NOTIFY` takes a database-wide lock at
    /// commit, which is held for as short a time as the transaction's remaining work.
    pub(crate) async fn send(&self, conn: &mut PgConnection) -> StoreResult<()> {
        let Some(payload) = self.payload() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// Longest pause between attempts to re-establish a broken listener.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Starts listening (returning once `LISTEN` is in effect) and hands every topic of every
/// notification to `sink` from a background task, which ends when the pool is closed.
pub(crate) async fn listen(pool: &PgPool, sink: WakeupSink) -> StoreResult<()> {
    let listener = connect(pool).await.map_err(map_err)?;
    tokio::spawn(deliver(pool.clone(), listener, sink));
    Ok(())
}

async fn deliver(pool: PgPool, first: PgListener, sink: WakeupSink) {
    let mut listener = Some(first);
    let mut pause = Duration::from_millis(250);
    loop {
        let Some(live) = listener.as_mut() else {
            // The broken listener (and its pooled connection) is gone; wait, then start over.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
            match connect(&pool).await {
                Ok(fresh) => {
                    listener = Some(fresh);
                    pause = Duration::from_millis(250);
                    sink("*");
                }
                Err(_) if pool.is_closed() => return,
                Err(e) => tracing::warn!(error = %e, "wake-up listener cannot reconnect"),
            }
            continue;
        };
        match live.try_recv().await {
            Ok(Some(n)) => n
                .payload()
                .split(',')
                .filter(|t| !t.is_empty())
                .for_each(|t| sink(t)),
            // The connection dropped and sqlx has already reconnected and listens again, but
            // whatever was sent in between is gone.
            Ok(None) => sink("*"),
            // `Store::close` closes the pool, which also interrupts `try_recv`: we are done.
            Err(_) if pool.is_closed() => return,
            // Anything else (the database is down, a reconnect failed, an error the listener
            // does not recover from itself): drop it and start over on a fresh connection,
            // pausing longer while the database stays away, then say `*` for the gap.
            Err(e) => {
                tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting");
                listener = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_distinct_topics_or_a_star() {
        let q = QueueName::parse("mail").unwrap();
        let mut w = Wakeups::default();
        assert_eq!(w.payload(), None);
        w.queue(&q);
        w.job(JobId(7));
        w.queue(&q);
        assert_eq!(w.payload().as_deref(), Some("job:7,queue:mail"));
        for id in 0..700 {
            w.job(JobId(id));
        }
        assert!(
            w.payload()
                .is_some_and(|p| p.len() <= MAX_PAYLOAD && p != "*")
        );
        for id in 700..2000 {
            w.job(JobId(id));
        }
        assert_eq!(w.payload().as_deref(), Some("*"));
    }
}
