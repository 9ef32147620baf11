//! Master key rotation: every data key not wrapped under the current master key — files' and
//! unfinished uploads' alike — is unwrapped with the previous key that made it and wrapped
//! again under the current one. Only the rows change (in batches, each one transaction), never
//! the objects, so a rotation is quick and can be interrupted and run again: keys already
//! rewrapped are no longer selected. Uploads are included so that the old key can be removed
//! while uploads are in progress: they complete under the new one.

use carafe_core::files::FileEncryption;
use carafe_core::{Store, StoreResult};

use super::master_keys::MasterKeys;

const BATCH: u32 = 500;

/// Rewraps every file's and upload's data key under the current master key; returns how many
/// changed. Fails (after committing the batches before it) on a key that no configured master
/// key opens.
pub async fn rotate_master(store: &dyn Store, keys: &MasterKeys) -> anyhow::Result<u64> {
    let current = keys.current()?.kid();
    let files = rewrap_all(
        keys,
        "file",
        async |after| store.files_not_under_key(current, after, BATCH).await,
        async |batch| store.set_file_encryption(&batch).await,
    )
    .await?;
    let uploads = rewrap_all(
        keys,
        "upload",
        async |after| store.uploads_not_under_key(current, after, BATCH).await,
        async |batch| store.set_upload_encryption(&batch).await,
    )
    .await?;
    Ok(files + uploads)
}

/// Pages through the rows `select` finds (after the last id seen) and saves each page
/// rewrapped with `save`.
async fn rewrap_all<Id: Copy + std::fmt::Display>(
    keys: &MasterKeys,
    what: &str,
    select: impl AsyncFn(Option<Id>) -> StoreResult<Vec<(Id, FileEncryption)>>,
    save: impl AsyncFn(Vec<(Id, FileEncryption)>) -> StoreResult<()>,
) -> anyhow::Result<u64> {
    let mut after = None;
    let mut done = 0u64;
    loop {
        let batch = select(after).await?;
        let Some((last, _)) = batch.last() else {
            return Ok(done);
        };
        after = Some(*last);
        let mut rewrapped = Vec::with_capacity(batch.len());
        for (id, enc) in &batch {
            let new = keys
                .rewrap(enc)
                .map_err(|e| anyhow::anyhow!("{what} {id}: {e}"))?;
            rewrapped.push((*id, new));
        }
        done += rewrapped.len() as u64;
        save(rewrapped).await?;
    }
}
