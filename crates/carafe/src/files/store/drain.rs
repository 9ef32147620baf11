//! Removing leftover bytes (and their records) that a database query lists without a
//! cursor, listing whatever could not be removed yet again: expired direct-upload sessions,
//! stale S3 multipart uploads. Each page asks for as many more rows as have failed so far and
//! skips those, so a leftover that cannot be removed now neither stops the sweep before the
//! others nor makes it loop.

use std::collections::HashSet;
use std::hash::Hash;

/// What became of one listed leftover.
pub enum Removal {
    Removed,
    /// Someone else removed it first.
    AlreadyGone,
    /// It stays listed; the next sweep retries it (the remover logs why).
    Failed,
}

/// Lists up to `batch` (plus the failures so far) leftovers at a time with `list`, removes
/// each with `remove`, and returns how many this call removed. Only an error of `list` ends
/// the sweep early.
///
/// (Closures returning futures rather than async closures: the futures of async closures are
/// not known to be `Send` in a spawned task's future, where the sweeps run.)
pub async fn drain<T, K, E, L, R>(
    batch: u32,
    list: impl Fn(u32) -> L,
    key: impl Fn(&T) -> K,
    remove: impl Fn(T) -> R,
) -> Result<u64, E>
where
    K: Eq + Hash,
    L: Future<Output = Result<Vec<T>, E>>,
    R: Future<Output = Removal>,
{
    let mut removed = 0;
    let mut failed = HashSet::new();
    loop {
        let extra = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        let limit = batch.saturating_add(extra);
        let listed = list(limit).await?;
        let full = listed.len() >= limit as usize;
        for item in listed {
            let k = key(&item);
            if failed.contains(&k) {
                continue;
            }
            match remove(item).await {
                Removal::Removed => removed += 1,
                Removal::AlreadyGone => {}
                Removal::Failed => {
                    failed.insert(k);
                }
            }
        }
        if !full {
            return Ok(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn failures_are_skipped_and_the_rest_are_removed_across_pages() {
        // Oldest first, as the stores list; 0, 1 and 2 can never be removed.
        let left = Mutex::new((0..7).collect::<Vec<u32>>());
        let left = &left;
        let list = |limit: u32| async move {
            let left = left.lock().unwrap();
            Ok::<_, ()>(
                left.iter()
                    .copied()
                    .take(limit as usize)
                    .collect::<Vec<_>>(),
            )
        };
        let remove = |n: u32| async move {
            if n < 3 {
                return Removal::Failed;
            }
            left.lock().unwrap().retain(|&m| m != n);
            Removal::Removed
        };
        // Pages of 2: the first page is all failures, which must not stop the sweep.
        let removed = drain(2, list, |n| *n, remove).await.unwrap();
        assert_eq!(removed, 4);
        assert_eq!(*left.lock().unwrap(), vec![0, 1, 2]);
    }
}
