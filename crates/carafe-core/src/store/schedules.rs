//! Recurring jobs (cron schedules) and their firing history.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::jobs::{JobId, Schedule};
use crate::page::{Page, PageRequest};

/// Recurring jobs. Firing is done by the maintenance leader; `mark_fired` is fenced by the
/// tick it read, so an instance that briefly also believed itself leader changes nothing.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates or replaces a schedule (keeping its creation time and firing history); true
    /// when it was created.
    async fn put_schedule(&self, schedule: Schedule) -> StoreResult<bool>;
    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;
    /// In name order; `after` is a name.
    async fn list_schedules(&self, page: &PageRequest) -> StoreResult<Page<Schedule>>;
    /// True when it existed.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;
    /// Unpaused schedules whose next tick is due, earliest first.
    async fn due_schedules(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Schedule>>;
    /// Records a firing, if the schedule's next tick is still `expected_next`; true when it was.
    async fn mark_fired(
        &self,
        name: &str,
        expected_next: OffsetDateTime,
        fired_at: OffsetDateTime,
        job: Option<JobId>,
        next: OffsetDateTime,
    ) -> StoreResult<bool>;
}
