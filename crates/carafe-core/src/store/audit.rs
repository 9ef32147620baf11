//! The append-only audit log. Writes that change what it records (keys, files, uploads) append
//! their events themselves, in their own transactions; this trait is for everything else and
//! for reading the log back.

use async_trait::async_trait;

use crate::StoreResult;
use crate::audit::{AuditEvent, AuditFilter, NewAuditEvent};
use crate::page::{Page, PageRequest};

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Appends several events in one transaction (batched writers, such as download logs).
    async fn append_audits(&self, events: &[NewAuditEvent]) -> StoreResult<()>;
    /// The events `filter` matches, newest first; `after` is an event id, the page holds
    /// older events. Large exports page through this with big pages rather than one query.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
}
