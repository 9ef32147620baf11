//! Conformance checks for `Backend`: the database answers and is migrated, twice over.

use std::sync::Arc;

use crate::store::Store;

pub async fn ping_and_migrations_are_current(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    let stats = store.pool_stats();
    assert!(stats.max >= 1 && stats.size <= stats.max, "{stats:?}");
}
