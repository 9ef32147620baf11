//! `IdempotencyStore` on SQLite: one upsert decides whether the caller takes the key;
//! every later change to a reservation names its holder's token.

use async_trait::async_trait;
use carafe_core::idempotency::{Reservation, Reserve};
use carafe_core::store::IdempotencyStore;
use carafe_core::{StoreError, StoreResult};
use rand::Rng;
use sqlx::Row;
use time::OffsetDateTime;

use crate::{SqliteStore, map_err, ms};

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn reserve_idempotency(&self, r: Reserve<'_>) -> StoreResult<Reservation> {
        let mut tx = self.begin_write().await?;
        let token = new_token();
        // Take the key when it is new, expired, or abandoned by a crashed request that sent the
        // same body; otherwise leave the row alone and report it.
        let taken = sqlx::query(
            "INSERT INTO idempotency_records
                 (scope, key, fingerprint, response, locked_until, expires_at, created_at, owner)
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7)
             ON CONFLICT (scope, key) DO UPDATE SET
                 fingerprint = excluded.fingerprint, response = NULL,
                 locked_until = excluded.locked_until, expires_at = excluded.expires_at,
                 created_at = excluded.created_at, owner = excluded.owner
             WHERE idempotency_records.expires_at <= ?6
                OR (idempotency_records.response IS NULL
                    AND idempotency_records.locked_until <= ?6
                    AND idempotency_records.fingerprint = excluded.fingerprint)",
        )
        .bind(r.scope)
        .bind(r.key)
        .bind(&r.fingerprint[..])
        .bind(ms(r.locked_until))
        .bind(ms(r.expires_at))
        .bind(ms(r.now))
        .bind(&token)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected()
            == 1;
        let result = if taken {
            Reservation::Reserved { token }
        } else {
            let row = sqlx::query(
                "SELECT fingerprint, response FROM idempotency_records WHERE scope = ? AND key = ?",
            )
            .bind(r.scope)
            .bind(r.key)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            let fp: Vec<u8> = row.try_get("fingerprint").map_err(map_err)?;
            Reservation::Existing {
                fingerprint: fp
                    .try_into()
                    .map_err(|_| StoreError::corrupt("idempotency_records.fingerprint"))?,
                response: row.try_get("response").map_err(map_err)?,
            }
        };
        tx.commit().await.map_err(map_err)?;
        Ok(result)
    }

    async fn renew_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        locked_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_records SET locked_until = ?1
             WHERE scope = ?2 AND key = ?3 AND owner = ?4 AND response IS NULL",
        )
        .bind(ms(locked_until))
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: Vec<u8>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_records SET response = ?1
             WHERE scope = ?2 AND key = ?3 AND owner = ?4 AND response IS NULL",
        )
        .bind(response)
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_idempotency(&self, scope: &str, key: &str, token: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM idempotency_records
             WHERE scope = ?1 AND key = ?2 AND owner = ?3 AND response IS NULL",
        )
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune_idempotency(&self, now: OffsetDateTime, batch: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM idempotency_records WHERE (scope, key) IN (
                 SELECT scope, key FROM idempotency_records WHERE expires_at <= ? LIMIT ?)",
        )
        .bind(ms(now))
        .bind(i64::from(batch))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

/// A reservation's owner token: 16 random bytes, as hex.
fn new_token() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}
