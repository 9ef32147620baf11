//! `ScheduleStore` on PostgreSQL.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::jobs::{JobId, Schedule};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::ScheduleStore;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::{PgStore, map_err};

const COLUMNS: &str = "name, cron, timezone, job, paused, next_fire_at, last_fire_at, \
    last_job_id, created_at, updated_at";

fn schedule_from_row(row: &PgRow) -> StoreResult<Schedule> {
    let job: Json<Value> = row.try_get("job").map_err(map_err)?;
    Ok(Schedule {
        name: row.try_get("name").map_err(map_err)?,
        cron: row.try_get("cron").map_err(map_err)?,
        timezone: row.try_get("timezone").map_err(map_err)?,
        job: job.0,
        paused: row.try_get("paused").map_err(map_err)?,
        next_fire_at: row.try_get("next_fire_at").map_err(map_err)?,
        last_fire_at: row.try_get("last_fire_at").map_err(map_err)?,
        last_job_id: row
            .try_get::<Option<i64>, _>("last_job_id")
            .map_err(map_err)?
            .map(JobId),
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn put_schedule(&self, s: Schedule) -> StoreResult<bool> {
        // `xmax = 0` is true only for a freshly inserted row: it tells "created" from
        // "replaced" in the same statement.
        let created: bool = sqlx::query_scalar(
            "INSERT INTO schedules (name, cron, timezone, job, paused, next_fire_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                 job = excluded.job, paused = excluded.paused,
                 next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at
             RETURNING xmax = 0",
        )
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(Json(&s.job))
        .bind(s.paused)
        .bind(s.next_fire_at)
        .bind(s.created_at)
        .bind(s.updated_at)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(created)
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn list_schedules(&self, page: &PageRequest) -> StoreResult<Page<Schedule>> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name > $1 ORDER BY name LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.clone().unwrap_or_default())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let items = rows
            .iter()
            .map(schedule_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |s| s.name.clone()))
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_schedules(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Schedule>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_fire_at <= $1
             ORDER BY next_fire_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn mark_fired(
        &self,
        name: &str,
        expected_next: OffsetDateTime,
        fired_at: OffsetDateTime,
        job: Option<JobId>,
        next: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET next_fire_at = $1, last_fire_at = $2,
                 last_job_id = COALESCE($3, last_job_id)
             WHERE name = $4 AND next_fire_at = $5",
        )
        .bind(next)
        .bind(fired_at)
        .bind(job.map(|j| j.0))
        .bind(name)
        .bind(expected_next)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
