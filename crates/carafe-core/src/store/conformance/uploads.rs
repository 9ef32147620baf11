//! Conformance checks for `UploadStore`: the lock, fenced appends, the ends of an upload, the
//! expiry sweep's view, and the data keys of encrypted uploads (kept, then rewrapped).

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{audit, rewrap_in_pages, wrapped_key};
use crate::files::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::{Duration, now};

fn new_upload(length: u64, ttl_s: i64) -> NewUpload {
    let at = now();
    NewUpload {
        id: UploadId::new(),
        bucket: BucketName::default_bucket(),
        owner: Some("u1".into()),
        length,
        metadata: json!({"filename": "보고서.pdf", "invoice": "7"}),
        actor: "key:k1".into(),
        created_at: at,
        expires_at: at + Duration::seconds(ttl_s),
        encryption: None,
    }
}

fn chunk(id: UploadId, offset: u64, size: u64) -> UploadChunk {
    UploadChunk {
        offset,
        size,
        key: format!("uploads/{id}/{offset:020}"),
        sha256: "ab".repeat(32),
    }
}

async fn advance(store: &Arc<dyn Store>, id: UploadId, holder: &str, c: &UploadChunk) -> bool {
    let at = now();
    store
        .advance_upload(Advance {
            id,
            holder,
            chunk: c,
            now: at,
            expires_at: at + Duration::hours(1),
        })
        .await
        .unwrap()
}

pub async fn uploads_are_recorded_and_read_back(store: Arc<dyn Store>) {
    let new = new_upload(100, 3600);
    let saved = store
        .insert_upload(new.clone(), audit("upload.create"))
        .await
        .unwrap();
    assert_eq!(saved, new.clone().into_upload());
    assert_eq!((saved.offset, saved.chunks), (0, 0));
    assert_eq!(saved.status, UploadStatus::Active);
    assert_eq!(store.get_upload(new.id).await.unwrap(), Some(saved));
    assert_eq!(store.get_upload(UploadId::new()).await.unwrap(), None);
    let actions: Vec<String> = store
        .list_audit(
            &crate::audit::AuditFilter::default(),
            &PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["upload.create"], "written with the row");
}

pub async fn uploads_locks_exclude_other_holders(store: Arc<dyn Store>) {
    let up = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    let t = now();
    let soon = t + Duration::seconds(30);
    assert!(store.try_lock_upload(up.id, "a", soon, t).await.unwrap());
    assert!(!store.try_lock_upload(up.id, "b", soon, t).await.unwrap());
    assert!(
        store.try_lock_upload(up.id, "a", soon, t).await.unwrap(),
        "the holder renews"
    );
    let row = store.get_upload(up.id).await.unwrap().unwrap();
    assert_eq!(row.lock_holder.as_deref(), Some("a"));
    assert_eq!(row.locked_until, Some(soon));
    // Releasing by another holder does nothing; by the holder frees the lock.
    store.release_upload(up.id, "b").await.unwrap();
    assert!(!store.try_lock_upload(up.id, "b", soon, t).await.unwrap());
    store.release_upload(up.id, "a").await.unwrap();
    assert!(store.try_lock_upload(up.id, "b", soon, t).await.unwrap());
    // A lapsed lock can be taken over.
    let later = soon + Duration::seconds(1);
    assert!(
        store
            .try_lock_upload(up.id, "c", later + Duration::seconds(30), later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lock_upload(UploadId::new(), "a", soon, t)
            .await
            .unwrap(),
        "unknown uploads cannot be locked"
    );
}

pub async fn uploads_concurrent_locks_have_one_winner(store: Arc<dyn Store>) {
    let up = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    let t = now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .try_lock_upload(up.id, &format!("h{i}"), t + Duration::seconds(30), t)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
}

pub async fn uploads_advances_are_fenced(store: Arc<dyn Store>) {
    let up = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    let t = now();
    let first = chunk(up.id, 0, 4);
    assert!(
        !advance(&store, up.id, "a", &first).await,
        "no advance without the lock"
    );
    store
        .try_lock_upload(up.id, "a", t + Duration::seconds(30), t)
        .await
        .unwrap();
    assert!(!advance(&store, up.id, "b", &first).await, "another holder");
    assert!(
        !advance(&store, up.id, "a", &chunk(up.id, 2, 4)).await,
        "a stale offset"
    );
    assert!(
        !advance(&store, up.id, "a", &chunk(up.id, 0, 11)).await,
        "past the length"
    );
    assert!(advance(&store, up.id, "a", &first).await);
    assert!(
        !advance(&store, up.id, "a", &first).await,
        "the same chunk twice"
    );
    let second = chunk(up.id, 4, 6);
    assert!(advance(&store, up.id, "a", &second).await);
    let row = store.get_upload(up.id).await.unwrap().unwrap();
    assert_eq!((row.offset, row.chunks), (10, 2));
    assert!(row.expires_at > up.expires_at - Duration::hours(1));
    assert_eq!(store.upload_chunks(up.id).await.unwrap(), [first, second]);
}

pub async fn uploads_end_once_and_expire(store: Arc<dyn Store>) {
    let t = now();
    let lock = |store: Arc<dyn Store>, id| async move {
        assert!(
            store
                .try_lock_upload(id, "h", t + Duration::seconds(30), t)
                .await
                .unwrap()
        );
    };
    let done = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    let file = FileId::new();
    let keep = t + Duration::hours(2);
    let end = UploadEnd::Completed(file);
    assert!(
        !store
            .finish_upload(done.id, "h", end.clone(), t, keep)
            .await
            .unwrap(),
        "only the lock holder finishes"
    );
    lock(store.clone(), done.id).await;
    assert!(
        store
            .finish_upload(done.id, "h", end.clone(), t, keep)
            .await
            .unwrap()
    );
    let row = store.get_upload(done.id).await.unwrap().unwrap();
    assert_eq!(row.status, UploadStatus::Completed);
    assert_eq!(
        (row.file, row.offset, row.expires_at),
        (Some(file), 10, keep)
    );
    assert_eq!(row.lock_holder, None, "finishing frees the lock");
    lock(store.clone(), done.id).await;
    assert!(
        !store
            .finish_upload(done.id, "h", UploadEnd::Failed("x".into()), t, keep)
            .await
            .unwrap(),
        "an upload ends once"
    );
    store.release_upload(done.id, "h").await.unwrap();

    let refused = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    lock(store.clone(), refused.id).await;
    let failed = UploadEnd::Failed("type_mismatch".into());
    assert!(
        store
            .finish_upload(refused.id, "h", failed, t, keep)
            .await
            .unwrap()
    );
    let row = store.get_upload(refused.id).await.unwrap().unwrap();
    assert_eq!(row.status, UploadStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("type_mismatch"));

    // Termination hides the upload by expiring it now, and is audited.
    let gone = store
        .insert_upload(new_upload(10, 3600), audit("upload.create"))
        .await
        .unwrap();
    assert!(
        !store
            .terminate_upload(gone.id, "h", t, audit("upload.terminate"))
            .await
            .unwrap()
    );
    lock(store.clone(), gone.id).await;
    assert!(
        store
            .terminate_upload(gone.id, "h", t, audit("upload.terminate"))
            .await
            .unwrap()
    );
    let row = store.get_upload(gone.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.expires_at), (UploadStatus::Terminated, t));

    let stale = store
        .insert_upload(new_upload(10, -5), audit("upload.create"))
        .await
        .unwrap();
    lock(store.clone(), stale.id).await;
    assert!(advance(&store, stale.id, "h", &chunk(stale.id, 0, 3)).await);
    // The advance moved its expiry an hour on; put it back in the past by finishing.
    assert!(
        store
            .finish_upload(stale.id, "h", UploadEnd::Failed("x".into()), t, t)
            .await
            .unwrap()
    );
    let expired: Vec<UploadId> = store
        .expired_uploads(t + Duration::milliseconds(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(expired.len(), 2);
    assert!(expired.contains(&gone.id) && expired.contains(&stale.id));
    assert_eq!(store.expired_uploads(t, 1).await.unwrap().len(), 1);
    assert!(store.purge_upload(stale.id).await.unwrap());
    assert!(!store.purge_upload(stale.id).await.unwrap());
    assert!(store.upload_chunks(stale.id).await.unwrap().is_empty());
    assert_eq!(store.get_upload(stale.id).await.unwrap(), None);
    let audits = store
        .list_audit(
            &crate::audit::AuditFilter::default(),
            &PageRequest::first(20),
        )
        .await
        .unwrap();
    let terminations = audits
        .items
        .iter()
        .filter(|e| e.action == "upload.terminate")
        .count();
    assert_eq!(
        terminations, 1,
        "only the termination that happened is logged"
    );
}

pub async fn uploads_keep_and_rewrap_their_data_keys(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..5u8 {
        let mut new = new_upload(10, 3600);
        new.encryption = (n != 4).then(|| wrapped_key(if n == 3 { "new" } else { "old" }, n));
        let saved = store
            .insert_upload(new.clone(), audit("upload.create"))
            .await
            .unwrap();
        assert_eq!(saved.encryption, new.encryption);
        assert_eq!(store.get_upload(new.id).await.unwrap(), Some(saved));
        ids.push(new.id);
    }
    // Ended uploads are rewrapped too: their row lives on until it expires.
    let t = now();
    let soon = t + Duration::seconds(30);
    assert!(store.try_lock_upload(ids[1], "h", soon, t).await.unwrap());
    let end = UploadEnd::Failed("x".into());
    assert!(store.finish_upload(ids[1], "h", end, t, t).await.unwrap());
    rewrap_in_pages(
        &ids,
        async |after, limit| {
            store
                .uploads_not_under_key("new", after, limit)
                .await
                .unwrap()
        },
        async |rows| store.set_upload_encryption(&rows).await.unwrap(),
    )
    .await;
    let row = store.get_upload(ids[2]).await.unwrap().unwrap();
    assert_eq!(row.encryption, Some(wrapped_key("new", 2)));
    assert_eq!(row.status, UploadStatus::Active, "nothing else changes");
    let plain = store.get_upload(ids[4]).await.unwrap().unwrap();
    assert_eq!(plain.encryption, None);
}
