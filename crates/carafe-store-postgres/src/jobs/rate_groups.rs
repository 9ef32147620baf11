//! `RateGroupStore` on PostgreSQL: rate limits shared by several queues (see
//! `carafe_core::jobs::rate_groups`), one `rate_groups` row each, and the two steps of a claim
//! that charge a queue's group (`group_allowance` before, `charge_group` after). Several
//! servers claim from a group's queues at once, so whatever reads a group to change it locks
//! its row first (`FOR UPDATE`) and writes it back in the same transaction: claims and
//! slow-downs take turns and each sees what the one before it wrote.

use async_trait::async_trait;
use carafe_core::jobs::{QueueName, RateGroup, RateGroupState};
use carafe_core::store::RateGroupStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use crate::{PgStore, map_err};

const COLUMNS: &str = "name, rate_per_second, burst, hourly_cap, daily_cap, tokens, tokens_at, \
    slowed_rate, slowed_at, hour_start, hour_count, day_start, day_count";

/// A count as `bigint`; past `i64::MAX` cannot be stored.
fn int8(n: u64, what: &'static str) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::corrupt(what))
}

fn uint8(row: &PgRow, col: &'static str) -> StoreResult<u64> {
    let n: i64 = row.try_get(col).map_err(map_err)?;
    u64::try_from(n).map_err(|_| StoreError::corrupt(format!("rate_groups.{col}")))
}

fn cap(row: &PgRow, col: &'static str) -> StoreResult<Option<u64>> {
    let n: Option<i64> = row.try_get(col).map_err(map_err)?;
    n.map(u64::try_from)
        .transpose()
        .map_err(|_| StoreError::corrupt(format!("rate_groups.{col}")))
}

fn state_from_row(row: &PgRow) -> StoreResult<RateGroupState> {
    let burst: i64 = row.try_get("burst").map_err(map_err)?;
    Ok(RateGroupState {
        group: RateGroup {
            name: row.try_get("name").map_err(map_err)?,
            rate_per_second: row.try_get("rate_per_second").map_err(map_err)?,
            burst: u32::try_from(burst).map_err(|_| StoreError::corrupt("rate_groups.burst"))?,
            hourly: cap(row, "hourly_cap")?,
            daily: cap(row, "daily_cap")?,
        },
        tokens: row.try_get("tokens").map_err(map_err)?,
        tokens_at: row.try_get("tokens_at").map_err(map_err)?,
        slowed_rate: row.try_get("slowed_rate").map_err(map_err)?,
        slowed_at: row.try_get("slowed_at").map_err(map_err)?,
        hour_start: row.try_get("hour_start").map_err(map_err)?,
        hour_count: uint8(row, "hour_count")?,
        day_start: row.try_get("day_start").map_err(map_err)?,
        day_count: uint8(row, "day_count")?,
    })
}

/// The group's row; with `lock`, locked until the transaction ends.
async fn fetch(
    conn: &mut PgConnection,
    name: &str,
    lock: bool,
) -> StoreResult<Option<RateGroupState>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM rate_groups WHERE name = $1{lock}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(state_from_row)
        .transpose()
}

/// Writes where the group's limits stand (not its settings).
async fn save(conn: &mut PgConnection, s: &RateGroupState) -> StoreResult<()> {
    sqlx::query(
        "UPDATE rate_groups SET tokens = $2, tokens_at = $3, slowed_rate = $4, slowed_at = $5,
             hour_start = $6, hour_count = $7, day_start = $8, day_count = $9
         WHERE name = $1",
    )
    .bind(&s.group.name)
    .bind(s.tokens)
    .bind(s.tokens_at)
    .bind(s.slowed_rate)
    .bind(s.slowed_at)
    .bind(s.hour_start)
    .bind(int8(s.hour_count, "rate_groups.hour_count")?)
    .bind(s.day_start)
    .bind(int8(s.day_count, "rate_groups.day_count")?)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// How many of `max` claims group `name` allows at `now`, and its state refilled to `now` to
/// charge with `charge_group`; `None` when there is no such group (it limits nothing). The
/// group's row stays locked until the claiming transaction ends, so instances claiming from
/// its queues at once count each other's claims.
pub(super) async fn group_allowance(
    conn: &mut PgConnection,
    name: &str,
    max: u32,
    now: OffsetDateTime,
) -> StoreResult<Option<(u32, RateGroupState)>> {
    Ok(fetch(conn, name, true)
        .await?
        .map(|s| s.allowance(max, now)))
}

/// Charges the group `claimed` claims (made under the allowance `state` came with) and
/// writes its state, refilled as it is, even when nothing was claimed.
pub(super) async fn charge_group(
    conn: &mut PgConnection,
    mut state: RateGroupState,
    claimed: usize,
) -> StoreResult<()> {
    state.spend(claimed as u64);
    save(conn, &state).await
}

#[async_trait]
impl RateGroupStore for PgStore {
    async fn put_rate_group(&self, group: &RateGroup, now: OffsetDateTime) -> StoreResult<()> {
        let s = RateGroupState::new(group.clone(), now);
        let sql = format!(
            "INSERT INTO rate_groups ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (name) DO UPDATE SET rate_per_second = excluded.rate_per_second,
                 burst = excluded.burst, hourly_cap = excluded.hourly_cap,
                 daily_cap = excluded.daily_cap,
                 tokens = LEAST(rate_groups.tokens, excluded.burst)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&group.name)
            .bind(group.rate_per_second)
            .bind(i64::from(group.burst))
            .bind(group.hourly.map(|n| int8(n, "hourly cap")).transpose()?)
            .bind(group.daily.map(|n| int8(n, "daily cap")).transpose()?)
            .bind(s.tokens)
            .bind(s.tokens_at)
            .bind(s.slowed_rate)
            .bind(s.slowed_at)
            .bind(s.hour_start)
            .bind(int8(s.hour_count, "hour count")?)
            .bind(s.day_start)
            .bind(int8(s.day_count, "day count")?)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn set_queue_rate_group(
        &self,
        queue: &QueueName,
        group: Option<&str>,
    ) -> StoreResult<()> {
        if group.is_none() {
            // Leaving a group makes no row for a queue that has none.
            sqlx::query(
                "UPDATE queues SET rate_group = NULL, updated_at = $1
                 WHERE name = $2 AND rate_group IS NOT NULL",
            )
            .bind(carafe_core::time::now())
            .bind(queue.as_str())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at, rate_group) VALUES ($1, false, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET rate_group = excluded.rate_group, updated_at = excluded.updated_at",
        )
        .bind(queue.as_str())
        .bind(carafe_core::time::now())
        .bind(group)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn rate_group(&self, name: &str) -> StoreResult<Option<RateGroupState>> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        fetch(&mut conn, name, false).await
    }

    async fn slow_rate_group(&self, name: &str, now: OffsetDateTime) -> StoreResult<Option<f64>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let Some(mut state) = fetch(&mut tx, name, true).await? else {
            return Ok(None);
        };
        if state.slow_down(now) {
            save(&mut tx, &state).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(state.current_rate(now)))
    }
}
