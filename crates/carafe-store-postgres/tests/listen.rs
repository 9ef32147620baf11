//! Cross-server wake-ups: a write through one `PgStore` reaches a listener on another.
//! Needs `CARAFE_TEST_POSTGRES_URL`; ignored otherwise (run with `--include-ignored`).
//! `NOTIFY` channels are per database, so topics from tests running alongside may arrive too:
//! each test waits for its own topic and ignores the rest.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::jobs::{NewJob, QueueName};
use carafe_core::store::WakeupSink;
use carafe_core::store::prelude::*;
use carafe_store_postgres::PgStore;
use carafe_store_postgres::testing::fresh_database_url;
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn new_job(queue: &QueueName) -> NewJob {
    let now = carafe_core::time::now();
    NewJob {
        queue: queue.clone(),
        args: json!({}),
        priority: 0,
        max_attempts: 1,
        backoff: None,
        timeout: Duration::from_secs(30),
        scheduled_at: now,
        unique: None,
        owner: None,
        target: None,
        created_at: now,
    }
}

fn channel_sink() -> (WakeupSink, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: WakeupSink = Arc::new(move |topic: &str| {
        let _ = tx.send(topic.to_owned());
    });
    (sink, rx)
}

/// Waits for `want`, skipping other topics.
async fn wait_for(rx: &mut mpsc::UnboundedReceiver<String>, want: &str) {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(topic) = rx.recv().await {
            if topic == want {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no `{want}` wake-up within {WAIT:?}");
}

fn unique_queue() -> QueueName {
    QueueName::parse(&format!("listen-{}", uuid::Uuid::now_v7().simple())).unwrap()
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn an_insert_wakes_a_listener_on_another_store() {
    let url = fresh_database_url().await;
    let writer = PgStore::connect(&url, 2).await.unwrap();
    writer.migrate().await.unwrap();
    let listener = PgStore::connect(&url, 2).await.unwrap();
    let (sink, mut rx) = channel_sink();
    listener.listen(sink).await.unwrap();

    let queue = unique_queue();
    writer.insert_jobs(vec![new_job(&queue)]).await.unwrap();
    wait_for(&mut rx, &format!("queue:{queue}")).await;

    // Closing the store ends the listening task (which drops the sink, closing the channel),
    // and does not hang on the connection the listener holds.
    tokio::time::timeout(WAIT, listener.close())
        .await
        .expect("close hangs");
    let drained = tokio::time::timeout(WAIT, async { while rx.recv().await.is_some() {} }).await;
    assert!(drained.is_ok(), "the listening task outlived the pool");
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn a_lost_listener_reconnects_and_reports_the_gap() {
    let url = fresh_database_url().await;
    let writer = PgStore::connect(&url, 2).await.unwrap();
    writer.migrate().await.unwrap();
    // A name of its own lets the test find (and kill) the listener's server process.
    let app = format!("carafe-listen-{}", uuid::Uuid::now_v7().simple());
    let listener = PgStore::connect(&format!("{url}&application_name={app}"), 1)
        .await
        .unwrap();
    let (sink, mut rx) = channel_sink();
    listener.listen(sink).await.unwrap();

    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        killed,
        [true],
        "the listener holds the pool's only connection"
    );
    wait_for(&mut rx, "*").await;

    let queue = unique_queue();
    writer.insert_jobs(vec![new_job(&queue)]).await.unwrap();
    wait_for(&mut rx, &format!("queue:{queue}")).await;
    listener.close().await;
}
