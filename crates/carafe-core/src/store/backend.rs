//! What the server needs to run a database rather than to use it: which one it is, whether it
//! answers, its migrations, its pool, closing it, and wake-ups from other processes.

use async_trait::async_trait;

use crate::StoreResult;

#[async_trait]
pub trait Backend: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// One cheap round trip, for `/readyz` and `carafe check`.
    async fn ping(&self) -> StoreResult<()>;
    /// Applies every pending migration.
    async fn migrate(&self) -> StoreResult<()>;
    /// Names of migrations this build knows but the database has not applied.
    async fn pending_migrations(&self) -> StoreResult<Vec<String>>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection (waiting for those in use to be returned).
    async fn close(&self);
    /// Starts delivering wake-ups written by other processes (PostgreSQL `NOTIFY`) to `sink`,
    /// with `"*"` after any gap in which some may have been missed. Backends without
    /// cross-process wake-ups do nothing; polling covers them.
    async fn listen(&self, sink: WakeupSink) -> StoreResult<()>;
}

/// Connection-pool figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Receives wake-up topics such as `queue:<name>` or `job:<id>`.
pub type WakeupSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;
