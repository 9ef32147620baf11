//! `LeaderStore` on SQLite: a named lease is a row of `leaders`, taken or renewed with one
//! conditional upsert.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::store::LeaderStore;
use time::OffsetDateTime;

use crate::{SqliteStore, map_err, ms};

#[async_trait]
impl LeaderStore for SqliteStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO leaders (name, holder, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leaders.holder = excluded.holder OR leaders.expires_at <= ?",
        )
        .bind(name)
        .bind(holder)
        .bind(ms(until))
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leaders WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
