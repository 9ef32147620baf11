//! Direct-upload sessions: a client puts a file straight into object storage with a signed
//! URL, and Carafe records the session until the client says it is done.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::files::{DirectState, DirectUpload, FileId};

/// Direct-upload sessions (see `files::DirectUpload`). State changes are conditional, so of
/// two concurrent `complete` calls exactly one goes on.
#[async_trait]
pub trait DirectStore: Send + Sync {
    async fn insert_direct(&self, upload: DirectUpload) -> StoreResult<()>;
    /// The session in any state, expired or not.
    async fn get_direct(&self, id: FileId) -> StoreResult<Option<DirectUpload>>;
    /// Moves the session from `from` to `to`; true when it was in `from`.
    async fn transition_direct(
        &self,
        id: FileId,
        from: DirectState,
        to: DirectState,
    ) -> StoreResult<bool>;
    /// Forgets a session; true when it existed.
    async fn delete_direct(&self, id: FileId) -> StoreResult<bool>;
    /// Up to `limit` sessions whose expiry has passed (any state), oldest expiry first.
    async fn expired_directs(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DirectUpload>>;
}
