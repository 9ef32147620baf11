//! Named leases that make one instance of several the leader for a task.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;

/// Leader election for work one instance should do at a time (maintenance, schedules).
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// Takes or renews the named lease until `until`; true when `holder` leads now.
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Gives the lease up, if `holder` has it.
    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()>;
}
