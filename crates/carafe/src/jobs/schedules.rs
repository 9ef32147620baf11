//! Recurring jobs (Celery beat, done once): a cron expression evaluated in a time zone, and
//! the job to enqueue at each tick. The maintenance leader fires due schedules; every tick's
//! job carries the unique key `schedule:<name>:<tick>`, so even two instances that both
//! believe they lead for a moment enqueue it once. After downtime a schedule fires once for
//! the latest missed tick, not once per missed tick, and moves on to the next one.

use std::time::Duration;

use carafe_core::jobs::{JobState, QueueName, Schedule};
use carafe_core::page::{Page, PageRequest};
use carafe_core::{StoreError, StoreResult};
use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::request::{self, EnqueueJob};
use super::{Error, Jobs};

/// Schedules fired per maintenance tick.
const BATCH: u32 = 100;
/// A cron expression must fire within this long (rules out "30 February").
const HORIZON: Duration = Duration::from_secs(5 * 366 * 24 * 3600);

/// The job a schedule enqueues at each tick (an enqueue request without timing or uniqueness,
/// which the schedule decides).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleJob {
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub backoff: Option<carafe_core::jobs::Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ScheduleJob {
    /// The enqueue request for the tick at `tick`.
    pub fn for_tick(&self, name: &str, tick: OffsetDateTime) -> EnqueueJob {
        EnqueueJob {
            queue: self.queue.clone(),
            args: self.args.clone(),
            unique_key: Some(format!(
                "schedule:{name}:{}",
                carafe_core::time::unix_ms(tick)
            )),
            unique_states: Some(
                JobState::ALL
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            ),
            unique_period_ms: None,
            run_at: None,
            delay_ms: None,
            priority: self.priority,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            owner: self.owner.clone(),
            target: self.target.clone(),
        }
    }
}

/// A parsed cron expression and time zone.
pub struct When {
    cron: Cron,
    tz: TimeZone,
}

fn to_jiff(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).expect("in range")
}

fn from_jiff(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond()).expect("in range")
}

impl When {
    /// Parses and checks a cron expression (5 fields, or 6 with seconds first) and an IANA
    /// time zone; the message says which one is wrong.
    pub fn parse(cron: &str, timezone: &str) -> Result<When, (&'static str, String)> {
        let tz = TimeZone::get(timezone).map_err(|_| {
            (
                "timezone",
                format!("`{timezone}` is not an IANA time zone such as Asia/Seoul or UTC"),
            )
        })?;
        let parsed: Cron = cron
            .parse()
            .map_err(|e| ("cron", format!("not a valid cron expression: {e}")))?;
        let when = When { cron: parsed, tz };
        let now = carafe_core::time::now();
        match when.next_after(now) {
            Some(next) if next - now <= HORIZON => Ok(when),
            _ => Err((
                "cron",
                "this expression never fires (or not within five years)".into(),
            )),
        }
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let zoned = to_jiff(t).to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&zoned, false).ok()?;
        Some(carafe_core::time::truncate_ms(from_jiff(next.timestamp())))
    }

    /// The last tick at or before `t`.
    pub fn latest_at(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let zoned = to_jiff(t).to_zoned(self.tz.clone());
        let prev = self.cron.find_previous_occurrence(&zoned, true).ok()?;
        Some(carafe_core::time::truncate_ms(from_jiff(prev.timestamp())))
    }
}

/// Fires every due schedule once: enqueues its job for the latest tick that has come, and
/// moves it to its next tick. Returns how many jobs were enqueued.
pub async fn fire_due(jobs: &Jobs, now: OffsetDateTime) -> StoreResult<usize> {
    let store = jobs.store().clone();
    let mut fired = 0;
    for schedule in store.due_schedules(now, BATCH).await? {
        let when = match When::parse(&schedule.cron, &schedule.timezone) {
            Ok(w) => w,
            Err((_, message)) => {
                tracing::warn!(schedule = %schedule.name, %message, "schedule cannot fire; pausing it");
                let mut paused = schedule.clone();
                paused.paused = true;
                store.put_schedule(paused).await?;
                continue;
            }
        };
        let tick = when
            .latest_at(now)
            .unwrap_or(schedule.next_fire_at)
            .max(schedule.next_fire_at);
        let next = when.next_after(now).unwrap_or(now + HORIZON);
        let job = enqueue_tick(jobs, &schedule, tick, now).await?;
        if job.is_some() {
            fired += 1;
        }
        store
            .mark_fired(&schedule.name, schedule.next_fire_at, tick, job, next)
            .await?;
    }
    Ok(fired)
}

async fn enqueue_tick(
    jobs: &Jobs,
    schedule: &Schedule,
    tick: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<Option<carafe_core::jobs::JobId>> {
    let template: ScheduleJob = match serde_json::from_value(schedule.job.clone()) {
        Ok(t) => t,
        Err(e) => return Err(StoreError::corrupt(format!("schedules.job: {e}"))),
    };
    let request = template.for_tick(&schedule.name, tick);
    // Its target is not resolved here: it was checked when the schedule was put, and
    // delivery checks the addresses again before connecting.
    match request::validate(request, "/job", jobs.settings(), jobs.push_enabled(), now) {
        Ok(new) => Ok(Some(jobs.enqueue(vec![new]).await?.remove(0).job().id)),
        Err(problems) => {
            tracing::warn!(schedule = %schedule.name, ?problems, "the schedule's job is no longer valid; tick skipped");
            Ok(None)
        }
    }
}

/// A schedule as asked for (`PUT /api/v1/schedules/{name}`).
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    pub cron: String,
    /// IANA time zone (default `UTC`).
    pub timezone: Option<String>,
    pub job: ScheduleJob,
    pub paused: bool,
}

/// A schedule name: the rules of queue names.
fn schedule_name(raw: &str) -> Result<String, Error> {
    QueueName::parse(raw)
        .map(|n| n.as_str().to_owned())
        .map_err(|_| {
            Error::invalid(
                "name",
                "schedule names are 1-64 characters of a-z, 0-9, '.', '_' and '-'",
            )
        })
}

impl Jobs {
    /// Creates or replaces a schedule, its next tick computed from `at`; the job must be valid
    /// now, as it will be at every tick. Returns the stored schedule and whether it is new.
    pub async fn put_schedule(
        &self,
        name: &str,
        req: ScheduleRequest,
        at: OffsetDateTime,
    ) -> Result<(Schedule, bool), Error> {
        let name = schedule_name(name)?;
        let timezone = req.timezone.unwrap_or_else(|| "UTC".into());
        let when = When::parse(&req.cron, &timezone)
            .map_err(|(field, m)| Error::invalid(format!("/{field}"), m))?;
        request::accept(
            self,
            vec![("/job".to_owned(), req.job.for_tick(&name, at))],
            Vec::new(),
            at,
        )
        .await?;
        let next = when
            .next_after(at)
            .ok_or_else(|| Error::invalid("/cron", "this expression never fires"))?;
        let schedule = Schedule {
            name: name.clone(),
            cron: req.cron,
            timezone,
            job: serde_json::to_value(&req.job).map_err(StoreError::other)?,
            paused: req.paused,
            next_fire_at: next,
            last_fire_at: None,
            last_job_id: None,
            created_at: at,
            updated_at: at,
        };
        let created = self.store().put_schedule(schedule).await?;
        Ok((self.schedule(&name).await?, created))
    }

    pub async fn schedule(&self, name: &str) -> Result<Schedule, Error> {
        self.store()
            .get_schedule(name)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Schedules in name order.
    pub async fn schedules(&self, page: &PageRequest) -> StoreResult<Page<Schedule>> {
        self.store().list_schedules(page).await
    }

    /// Removes a schedule (the jobs it enqueued are kept).
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        match self.store().delete_schedule(name).await? {
            true => Ok(()),
            false => Err(Error::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn ticks_follow_the_time_zone() {
        let when = When::parse("0 9 * * *", "Asia/Seoul").unwrap();
        let t = datetime!(2026-11-22 01:30 UTC); // 10:30 in Seoul
        assert_eq!(when.next_after(t), Some(datetime!(2026-11-23 00:00 UTC)));
        assert_eq!(when.latest_at(t), Some(datetime!(2026-11-22 00:00 UTC)));
        let every_second = When::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.next_after(t),
            Some(datetime!(2026-11-22 01:30:01 UTC))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        assert_eq!(When::parse("61 * * * *", "UTC").err().unwrap().0, "cron");
        assert_eq!(When::parse("every day", "UTC").err().unwrap().0, "cron");
        assert_eq!(When::parse("0 0 30 2 *", "UTC").err().unwrap().0, "cron");
        assert_eq!(
            When::parse("0 9 * * *", "Mars/Olympus").err().unwrap().0,
            "timezone"
        );
    }
}
