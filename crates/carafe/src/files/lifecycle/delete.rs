//! Deleting a file: it is hidden at once (its row marked deleted, with the audit event and
//! its purge job, in one transaction) and its bytes are purged by that job. A file under legal
//! hold is never deleted — not on request, not by retention — until the hold is released.

use carafe_core::StoreResult;
use carafe_core::audit::NewAuditEvent;
use carafe_core::files::{FileId, FileRecord};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde_json::json;

use crate::context::{Origin, Principal};
use crate::files::Files;
use crate::files::records::RecordError;

impl Files {
    /// Deletes a file the caller may see.
    pub async fn delete(
        &self,
        principal: &Principal,
        id: FileId,
        origin: Origin,
    ) -> Result<(), RecordError> {
        principal.require(Scope::Files)?;
        let Some(file) = self.store.get_file(id).await? else {
            return Err(RecordError::NotFound);
        };
        if !principal.may_see(Scope::Files, file.owner.as_deref()) {
            return Err(RecordError::NotFound);
        }
        let audit = origin.event(
            "file.delete",
            id,
            json!({"bucket": file.bucket, "name": file.name}),
        );
        if !self.remove(id, audit).await? {
            // Held (or deleted) between the read and the write.
            return Err(RecordError::LegalHold);
        }
        self.wake();
        Ok(())
    }

    /// Hides a file and queues its purge, recording `audit`; false when it is under legal
    /// hold (or already deleted). The caller wakes the files queue.
    pub(super) async fn remove(&self, id: FileId, audit: NewAuditEvent) -> StoreResult<bool> {
        let deleted = self
            .store
            .delete_file(id, now(), self.purge_job(id), audit)
            .await?;
        if deleted.is_some() {
            self.forget_file(id).await;
        }
        Ok(deleted.is_some())
    }

    /// Sets or releases a file's legal hold (server API keys only).
    pub async fn set_legal_hold(
        &self,
        principal: &Principal,
        id: FileId,
        hold: bool,
        origin: Origin,
    ) -> Result<FileRecord, RecordError> {
        principal.require_key(Scope::Files)?;
        let audit = origin.event("file.legal_hold", id, json!({"legal_hold": hold}));
        let file = self
            .store
            .set_legal_hold(id, hold, now(), audit)
            .await?
            .ok_or(RecordError::NotFound)?;
        self.forget_file(id).await;
        Ok(file)
    }
}
