//! The store conformance suite and PostgreSQL-specific checks, each in a fresh schema.
//! Needs `CARAFE_TEST_POSTGRES_URL`; ignored otherwise (run with `--include-ignored`).

use std::sync::Arc;

use carafe_core::Store;
use carafe_core::store::prelude::*;
use carafe_core::testing::RawSql;
use carafe_store_postgres::PgStore;
use carafe_store_postgres::testing::fresh_database_url;

async fn fresh() -> Arc<dyn Store> {
    let store = PgStore::connect(&fresh_database_url().await, 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

carafe_core::conformance_tests!(fresh, #[ignore = "needs CARAFE_TEST_POSTGRES_URL"]);

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn workflows_sweep_reaches_every_running_workflow() {
    let url = fresh_database_url().await;
    let store = PgStore::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    // Writes behind the store's back, on the test's own schema.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let raw: RawSql = Arc::new(move |sql: String| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        })
    });
    carafe_core::testing::workflows_sweep_reaches_every_running_workflow(Arc::new(store), raw)
        .await;
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn audit_log_rejects_updates_and_deletes() {
    let url = fresh_database_url().await;
    let store = PgStore::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    store
        .append_audit(carafe_core::audit::NewAuditEvent {
            at: carafe_core::time::now(),
            actor: "cli".into(),
            action: "x".into(),
            target: None,
            request_id: None,
            details: serde_json::json!({"a": [1, 2]}).into(),
        })
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        "UPDATE audit_events SET actor = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}
