//! The API keys a server accepts. Only a hash of each key is stored; creating and revoking a
//! key write their audit events in the same transaction, so the log never misses one.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::audit::NewAuditEvent;
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
