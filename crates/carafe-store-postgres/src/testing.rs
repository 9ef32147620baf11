//! Test support: every test gets its own schema in the shared test database, so tests run in
//! parallel without seeing each other's rows, and a run starts from nothing.

use sqlx::Connection;

/// The variable naming the test database; tests that need it are ignored when it is unset.
pub const ENV: &str = "CARAFE_TEST_POSTGRES_URL";

/// Creates a fresh schema and returns a URL whose connections use it (via `search_path`).
/// Panics with a clear message when `CARAFE_TEST_POSTGRES_URL` is unset, so a run with
/// `--include-ignored` cannot pass by skipping PostgreSQL.
pub async fn fresh_database_url() -> String {
    let base = std::env::var(ENV).unwrap_or_else(|_| {
        panic!("{ENV} is not set: PostgreSQL tests need a database (scripts/test-all sets it)")
    });
    let schema = format!("carafe_t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {ENV}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
