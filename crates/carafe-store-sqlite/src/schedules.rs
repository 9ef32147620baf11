//! `ScheduleStore` on SQLite.

use async_trait::async_trait;
use carafe_core::jobs::{JobId, Schedule};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::ScheduleStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};

const COLUMNS: &str = "name, cron, timezone, job, paused, next_fire_at, last_fire_at, \
    last_job_id, created_at, updated_at";

fn schedule_from_row(row: &SqliteRow) -> StoreResult<Schedule> {
    let job: String = row.try_get("job").map_err(map_err)?;
    Ok(Schedule {
        name: row.try_get("name").map_err(map_err)?,
        cron: row.try_get("cron").map_err(map_err)?,
        timezone: row.try_get("timezone").map_err(map_err)?,
        job: serde_json::from_str(&job).map_err(|_| StoreError::corrupt("schedules.job"))?,
        paused: row.try_get::<i64, _>("paused").map_err(map_err)? != 0,
        next_fire_at: at(row.try_get("next_fire_at").map_err(map_err)?),
        last_fire_at: row
            .try_get::<Option<i64>, _>("last_fire_at")
            .map_err(map_err)?
            .map(at),
        last_job_id: row
            .try_get::<Option<i64>, _>("last_job_id")
            .map_err(map_err)?
            .map(JobId),
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        updated_at: at(row.try_get("updated_at").map_err(map_err)?),
    })
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn put_schedule(&self, s: Schedule) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM schedules WHERE name = ?")
            .bind(&s.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO schedules (name, cron, timezone, job, paused, next_fire_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                 job = excluded.job, paused = excluded.paused,
                 next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at",
        )
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(s.job.to_string())
        .bind(i64::from(s.paused))
        .bind(ms(s.next_fire_at))
        .bind(ms(s.created_at))
        .bind(ms(s.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(existed.is_none())
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn list_schedules(&self, page: &PageRequest) -> StoreResult<Page<Schedule>> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name > ? ORDER BY name LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.clone().unwrap_or_default())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        let items = rows
            .iter()
            .map(schedule_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |s| s.name.clone()))
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM schedules WHERE name = ?")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn due_schedules(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Schedule>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_fire_at <= ?
             ORDER BY next_fire_at LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
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
            "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, last_job_id = COALESCE(?, last_job_id)
             WHERE name = ? AND next_fire_at = ?",
        )
        .bind(ms(next))
        .bind(ms(fired_at))
        .bind(job.map(|j| j.0))
        .bind(name)
        .bind(ms(expected_next))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
