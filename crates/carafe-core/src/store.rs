//! The store traits. Each capability owns one trait; `Store` composes them with what the server
//! needs to operate a backend (ping, migrations, pool figures). The server holds an
//! `Arc<dyn Store>` and never learns which database is behind it.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::audit::{AuditEvent, NewAuditEvent};
use crate::idempotency::{Reservation, Reserve};
use crate::keys::{ApiKey, KeyHash, KeyId, NewApiKey};
use crate::page::{Page, PageRequest};

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key and its audit event in one transaction.
    async fn insert_key(&self, key: NewApiKey, audit: NewAuditEvent) -> StoreResult<ApiKey>;
    /// Finds a key, revoked or not, by the hash of its text.
    async fn find_key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<ApiKey>>;
    async fn get_key(&self, id: KeyId) -> StoreResult<Option<ApiKey>>;
    /// Keys in id (creation) order; `after` is a key id.
    async fn list_keys(&self, page: &PageRequest) -> StoreResult<Page<ApiKey>>;
    /// Marks a key revoked (idempotently: a revoked key keeps its first revocation time) and
    /// writes the audit event, in one transaction. `None` when no such key exists.
    async fn revoke_key(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<ApiKey>>;
    async fn count_active_keys(&self) -> StoreResult<u64>;
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes the key if it is free, expired, or held by a crashed request with the same
    /// fingerprint whose lock has lapsed; otherwise reports what holds it.
    async fn reserve_idempotency(&self, req: Reserve<'_>) -> StoreResult<Reservation>;
    /// Stores the answer of the request that holds the key.
    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        response: Vec<u8>,
    ) -> StoreResult<()>;
    /// Frees a key whose request failed, so that it can be retried at once.
    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()>;
    /// Deletes up to `batch` expired records; returns how many went.
    async fn prune_idempotency(&self, now: OffsetDateTime, batch: u32) -> StoreResult<u64>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Newest first; `after` is an event id, the page holds older events.
    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEvent>>;
}

/// Connection-pool figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[async_trait]
pub trait Store: KeyStore + IdempotencyStore + AuditStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// One cheap round trip, for `/readyz` and `carafe check`.
    async fn ping(&self) -> StoreResult<()>;
    /// Applies every pending migration.
    async fn migrate(&self) -> StoreResult<()>;
    /// Names of migrations this build knows but the database has not applied.
    async fn pending_migrations(&self) -> StoreResult<Vec<String>>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection (waiting for those in use to be returned).
    async fn close(&self);
}
