//! The per-upload lock, held in the database so it works across instances. It is a short
//! lease renewed in the background while a request works (a body can take minutes to
//! arrive), so a crashed instance blocks an upload for one lease at most. Dropping the guard
//! — a client that went away makes the server drop its request — still gives the lock up.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::files::UploadId;
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a lock lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

pub struct UploadLock {
    store: Arc<dyn Store>,
    id: UploadId,
    holder: String,
    renewal: CancellationToken,
    renewing: Option<JoinHandle<()>>,
}

impl UploadLock {
    /// Takes the upload's lock for a new holder; `None` when someone else holds it (or the
    /// upload does not exist).
    pub async fn acquire(store: &Arc<dyn Store>, id: UploadId) -> StoreResult<Option<Self>> {
        let holder = uuid::Uuid::now_v7().simple().to_string();
        let at = now();
        if !store.try_lock_upload(id, &holder, at + LEASE, at).await? {
            return Ok(None);
        }
        let renewal = CancellationToken::new();
        let renewing = tokio::spawn(renew(store.clone(), id, holder.clone(), renewal.clone()));
        Ok(Some(UploadLock {
            store: store.clone(),
            id,
            holder,
            renewal,
            renewing: Some(renewing),
        }))
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Gives the lock up (also after finishing the upload, which already freed it).
    pub async fn release(mut self) {
        let renewing = self.renewing.take();
        release(&self.store, self.id, &self.holder, &self.renewal, renewing).await;
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        let Some(renewing) = self.renewing.take() else {
            return; // Released.
        };
        self.renewal.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, id, holder) = (self.store.clone(), self.id, self.holder.clone());
            let renewal = self.renewal.clone();
            runtime.spawn(async move {
                release(&store, id, &holder, &renewal, Some(renewing)).await;
            });
        }
    }
}

/// Stops renewal — waiting for a renewal in flight, which could otherwise take the freed
/// lock again — then frees the lock.
async fn release(
    store: &Arc<dyn Store>,
    id: UploadId,
    holder: &str,
    renewal: &CancellationToken,
    renewing: Option<JoinHandle<()>>,
) {
    renewal.cancel();
    if let Some(task) = renewing {
        let _ = task.await;
    }
    if let Err(e) = store.release_upload(id, holder).await {
        // It lapses by itself within one lease.
        tracing::warn!(upload = %id, error = %e, "cannot release an upload lock");
    }
}

/// Renews the lease every third of it until cancelled. A lost lock just stops renewal: every
/// write is fenced by the holder, so the request that lost it cannot change the upload.
async fn renew(store: Arc<dyn Store>, id: UploadId, holder: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LEASE / 3) => {}
        }
        let at = now();
        match store.try_lock_upload(id, &holder, at + LEASE, at).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(upload = %id, error = %e, "cannot renew an upload lock"),
        }
    }
}
