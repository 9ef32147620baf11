//! `LeaderStore` on PostgreSQL: a named lease is a row of `leaders`, taken or renewed with one
//! conditional upsert, atomic between servers racing for the same name.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::store::LeaderStore;
use time::OffsetDateTime;

use crate::{PgStore, map_err};

#[async_trait]
impl LeaderStore for PgStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        // Takes a free or expired lease, or renews our own; otherwise the upsert changes
        // nothing. ON CONFLICT makes this atomic between servers racing for the same name.
        let done = sqlx::query(
            "INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leaders.holder = excluded.holder OR leaders.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leaders WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
