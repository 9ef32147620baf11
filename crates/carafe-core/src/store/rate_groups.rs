//! `RateGroupStore`: rate limits shared by several queues (see `jobs::rate_groups`). Claims
//! from a queue in a group charge the group in the claiming transaction (that part lives with
//! the `LeaseStore` implementation); this trait defines groups, puts queues in them, reads
//! where a group stands and slows it down.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::jobs::{QueueName, RateGroup, RateGroupState};

#[async_trait]
pub trait RateGroupStore: Send + Sync {
    /// Creates the group with a full bucket, or changes its settings keeping where it stands
    /// (tokens above the new burst are cut to it).
    async fn put_rate_group(&self, group: &RateGroup, now: OffsetDateTime) -> StoreResult<()>;
    /// Puts `queue` in `group` (`None`: in none). Putting it in a group makes the queue's row
    /// if it has none; taking it out of any does not. A group that does not exist limits
    /// nothing.
    async fn set_queue_rate_group(&self, queue: &QueueName, group: Option<&str>)
    -> StoreResult<()>;
    /// The group's settings and state as last written (not refilled to `now`).
    async fn rate_group(&self, name: &str) -> StoreResult<Option<RateGroupState>>;
    /// Slows the group down (`RateGroupState::slow_down`) under a row lock, so instances
    /// slowing it at once halve it once. The rate it goes at now, or `None` when there is no
    /// such group.
    async fn slow_rate_group(&self, name: &str, now: OffsetDateTime) -> StoreResult<Option<f64>>;
}
