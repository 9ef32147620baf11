//! `Idempotency-Key` records: the first request with a key reserves it under a token, and only
//! that token may renew, answer or release it, so a request whose lock lapsed and was taken
//! over cannot overwrite the new holder's answer.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::idempotency::{Reservation, Reserve};

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes the key if it is free, expired, or held by a crashed request with the same
    /// fingerprint whose lock has lapsed, under a new random token; otherwise reports what
    /// holds it.
    async fn reserve_idempotency(&self, req: Reserve<'_>) -> StoreResult<Reservation>;
    /// Moves the lock of a running request to `locked_until`, if `token` still holds the key
    /// unanswered. False (and nothing changes) otherwise.
    async fn renew_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        locked_until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Stores the answer, if `token` still holds the key unanswered. False (and nothing
    /// changes) otherwise.
    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: Vec<u8>,
    ) -> StoreResult<bool>;
    /// Frees a key whose request failed, so that it can be retried at once, if `token` still
    /// holds it unanswered. False (and nothing changes) otherwise.
    async fn release_idempotency(&self, scope: &str, key: &str, token: &str) -> StoreResult<bool>;
    /// Deletes up to `batch` expired records; returns how many went.
    async fn prune_idempotency(&self, now: OffsetDateTime, batch: u32) -> StoreResult<u64>;
}
