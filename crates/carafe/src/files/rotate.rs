//! Master key rotation: every data key not wrapped under the current master key is unwrapped
//! with the previous key that made it and wrapped again under the current one. Only the rows
//! change (in batches, each one transaction), never the objects, so a rotation is quick and
//! can be interrupted and run again: files already rewrapped are no longer selected.

use carafe_core::Store;

use super::keyring::MasterKeys;

const BATCH: u32 = 500;

/// Rewraps every file's data key under the current master key; returns how many changed.
/// Fails (after committing the batches before it) on a file whose key no configured master
/// key opens.
pub async fn rotate_master(store: &dyn Store, keys: &MasterKeys) -> anyhow::Result<u64> {
    let current = keys.current()?.kid().to_owned();
    let mut after = None;
    let mut done = 0u64;
    loop {
        let batch = store.files_not_under_key(&current, after, BATCH).await?;
        let Some((last, _)) = batch.last() else {
            return Ok(done);
        };
        after = Some(*last);
        let mut rewrapped = Vec::with_capacity(batch.len());
        for (id, enc) in &batch {
            let new = keys
                .rewrap(enc)
                .map_err(|e| anyhow::anyhow!("file {id}: {e}"))?;
            rewrapped.push((*id, new));
        }
        store.set_file_encryption(&rewrapped).await?;
        done += rewrapped.len() as u64;
    }
}
