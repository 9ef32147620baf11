//! The store conformance suite and SQLite-specific checks, each on a fresh database file.

use std::sync::Arc;

use carafe_core::Store;
use carafe_core::store::prelude::*;
use carafe_core::testing::RawSql;
use carafe_store_sqlite::SqliteStore;

async fn fresh() -> Arc<dyn Store> {
    // The directory lives as long as the test process; each test gets its own file.
    let dir = tempfile::tempdir().unwrap().keep();
    let store = SqliteStore::open(&dir.join("carafe.db"), 4).await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

carafe_core::conformance_tests!(fresh);

/// A fresh store, and a way to write to its file behind its back.
async fn fresh_with_raw_sql() -> (Arc<dyn Store>, RawSql) {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("carafe.db");
    let store = SqliteStore::open(&path, 4).await.unwrap();
    store.migrate().await.unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let raw: RawSql = Arc::new(move |sql: String| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        })
    });
    (Arc::new(store), raw)
}

#[tokio::test]
async fn workflows_sweep_reaches_every_running_workflow() {
    let (store, raw) = fresh_with_raw_sql().await;
    carafe_core::testing::workflows_sweep_reaches_every_running_workflow(store, raw).await;
}

#[tokio::test]
async fn audit_log_rejects_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carafe.db");
    let store = SqliteStore::open(&path, 1).await.unwrap();
    store.migrate().await.unwrap();
    store
        .append_audit(carafe_core::audit::NewAuditEvent {
            at: carafe_core::time::now(),
            actor: "cli".into(),
            action: "x".into(),
            target: None,
            request_id: None,
            details: serde_json::json!({}).into(),
        })
        .await
        .unwrap();
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_events SET actor = 'x'",
        "DELETE FROM audit_events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}
