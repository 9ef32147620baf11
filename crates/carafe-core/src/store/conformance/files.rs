//! Conformance checks for `FileStore`: buckets, file rows with their jobs, processing, deletion.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{audit, job, rewrap_in_pages, wrapped_key};
use crate::audit::AuditFilter;
use crate::files::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn bucket(name: &str, max_size: u64) -> Bucket {
    let at = now();
    Bucket {
        name: BucketName::parse(name).unwrap(),
        policy: BucketPolicy {
            max_size,
            ..BucketPolicy::default()
        },
        created_at: at,
        updated_at: at,
    }
}

fn new_file(bucket: &str, owner: Option<&str>) -> NewFile {
    NewFile {
        id: FileId::new(),
        bucket: BucketName::parse(bucket).unwrap(),
        name: "보고서 2025.pdf".into(),
        size: 1234,
        kind: "pdf".into(),
        mime: "application/pdf".into(),
        sha256: "ab".repeat(32),
        owner: owner.map(str::to_owned),
        metadata: json!({"invoice": 7}),
        created_at: now(),
        encryption: None,
    }
}

pub async fn files_buckets_are_created_replaced_and_listed(store: Arc<dyn Store>) {
    let (b, created) = store.put_bucket(bucket("photos", 10), false).await.unwrap();
    assert!(created);
    assert_eq!(b.policy.max_size, 10);
    // Without `replace`, an existing bucket stays as it was.
    let (same, created) = store.put_bucket(bucket("photos", 20), false).await.unwrap();
    assert!(!created);
    assert_eq!(same.policy.max_size, 10);
    // With it, the policy changes and the creation time is kept.
    let mut newer = bucket("photos", 30);
    newer.created_at = b.created_at + time::Duration::hours(1);
    let (replaced, created) = store.put_bucket(newer, true).await.unwrap();
    assert!(!created);
    assert_eq!(replaced.policy.max_size, 30);
    assert_eq!(replaced.created_at, b.created_at);
    let got = store
        .get_bucket(&BucketName::parse("photos").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, replaced);
    store.put_bucket(bucket("avatars", 5), false).await.unwrap();
    let names: Vec<String> = store
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name.to_string())
        .collect();
    assert_eq!(names, ["avatars", "photos"]);
    assert!(
        store
            .get_bucket(&BucketName::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn files_are_recorded_with_their_job_and_listed(store: Arc<dyn Store>) {
    let first = store
        .insert_file(
            new_file("default", Some("u1")),
            job("carafe.files", now()),
            audit("file.upload"),
        )
        .await
        .unwrap();
    assert_eq!(first.status, FileStatus::Processing);
    let job_id = first.job.expect("the row keeps its job");
    let stored_job = store.get_job(job_id).await.unwrap().unwrap();
    assert_eq!(stored_job.queue.as_str(), "carafe.files");
    assert_eq!(store.get_file(first.id).await.unwrap().unwrap(), first);
    let actions: Vec<String> = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["file.upload"]);

    let second = store
        .insert_file(
            new_file("other", Some("u2")),
            job("carafe.files", now()),
            audit("file.upload"),
        )
        .await
        .unwrap();
    let third = store
        .insert_file(
            new_file("default", Some("u2")),
            job("carafe.files", now()),
            audit("file.upload"),
        )
        .await
        .unwrap();
    let ids = |page: crate::page::Page<FileRecord>| -> Vec<FileId> {
        page.items.into_iter().map(|f| f.id).collect()
    };
    let all = FileFilter::default();
    let page = store
        .list_files(&all, &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(page.next_after, Some(second.id.to_string()));
    assert_eq!(ids(page), [third.id, second.id]);
    let rest = PageRequest {
        after: Some(second.id.to_string()),
        limit: 2,
    };
    assert_eq!(
        ids(store.list_files(&all, &rest).await.unwrap()),
        [first.id]
    );
    let by_bucket = FileFilter {
        bucket: Some(BucketName::parse("default").unwrap()),
        ..FileFilter::default()
    };
    let page = store
        .list_files(&by_bucket, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ids(page), [third.id, first.id]);
    let by_owner = FileFilter {
        owner: Some("u2".into()),
        status: Some(FileStatus::Processing),
        ..FileFilter::default()
    };
    let page = store
        .list_files(&by_owner, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ids(page), [third.id, second.id]);
    let garbage = PageRequest {
        after: Some("not-an-id".into()),
        limit: 5,
    };
    assert!(
        store
            .list_files(&all, &garbage)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn files_processing_ends_once(store: Arc<dyn Store>) {
    let file = store
        .insert_file(
            new_file("default", None),
            job("carafe.files", now()),
            audit("file.upload"),
        )
        .await
        .unwrap();
    let thumb = Thumbnail {
        name: "small".into(),
        width: 64,
        height: 32,
        size: 900,
        kind: "jpeg".into(),
        sha256: "cd".repeat(32),
    };
    let outcome = ProcessingOutcome {
        status: FileStatus::Ready,
        error_code: None,
        error: None,
        scan: Some(ScanResult::Clean),
        size: Some(1000),
        sha256: Some("ef".repeat(32)),
        thumbnails: vec![thumb.clone()],
        at: now(),
    };
    let done = store
        .finish_processing(file.id, outcome.clone(), vec![audit("file.scan")])
        .await
        .unwrap()
        .expect("a processing file is finished");
    assert_eq!(done.status, FileStatus::Ready);
    assert_eq!(done.size, 1000);
    assert_eq!(done.sha256, "ef".repeat(32));
    assert_eq!(done.scan, Some(ScanResult::Clean));
    assert_eq!(done.thumbnails, [thumb]);
    assert_eq!(done.name, file.name);
    assert_eq!(store.get_file(file.id).await.unwrap().unwrap(), done);
    // A second end (a retried job, say) changes nothing.
    let again = ProcessingOutcome {
        status: FileStatus::Quarantined,
        ..outcome
    };
    assert!(
        store
            .finish_processing(file.id, again, vec![audit("file.quarantine")])
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<String> = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["file.scan", "file.upload"]);
}

pub async fn files_deletion_hides_then_purges(store: Arc<dyn Store>) {
    let file = store
        .insert_file(
            new_file("default", None),
            job("carafe.files", now()),
            audit("file.upload"),
        )
        .await
        .unwrap();
    // A live row is never purged.
    assert!(!store.purge_file(file.id).await.unwrap());
    let mut purge = job("carafe.files", now());
    purge.args = json!({"purge": file.id});
    let deleted = store
        .delete_file(file.id, now(), purge, audit("file.delete"))
        .await
        .unwrap()
        .expect("a live file is deleted");
    assert!(deleted.deleted_at.is_some());
    assert!(store.get_file(file.id).await.unwrap().is_none());
    let listed = store
        .list_files(&FileFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    // The purge job was enqueued with the deletion.
    let queued = store
        .list_jobs(
            &crate::jobs::JobFilter::default(),
            &PageRequest::first(10),
            now(),
        )
        .await
        .unwrap();
    assert!(
        queued
            .items
            .iter()
            .any(|j| j.args["purge"] == json!(file.id))
    );
    assert!(
        store
            .delete_file(
                file.id,
                now(),
                job("carafe.files", now()),
                audit("file.delete")
            )
            .await
            .unwrap()
            .is_none()
    );
    // Processing cannot revive a deleted file.
    let outcome = ProcessingOutcome {
        status: FileStatus::Ready,
        error_code: None,
        error: None,
        scan: None,
        size: None,
        sha256: None,
        thumbnails: Vec::new(),
        at: now(),
    };
    assert!(
        store
            .finish_processing(file.id, outcome, Vec::new())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.purge_file(file.id).await.unwrap());
    assert!(!store.purge_file(file.id).await.unwrap());
}

pub async fn files_legal_holds_block_deletion_and_retention(store: Arc<dyn Store>) {
    let at = now();
    let insert = |bucket: &'static str| {
        let store = store.clone();
        async move {
            store
                .insert_file(
                    new_file(bucket, None),
                    job("carafe.files", now()),
                    audit("file.upload"),
                )
                .await
                .unwrap()
        }
    };
    let old = insert("default").await;
    let held = insert("default").await;
    let other = insert("other").await;
    let later = now() + time::Duration::seconds(1);
    let held_now = store
        .set_legal_hold(held.id, true, at, audit("file.legal_hold"))
        .await
        .unwrap()
        .expect("a live file");
    assert!(held_now.legal_hold);
    let default = BucketName::parse("default").unwrap();
    let expired = store.expired_files(&default, later, 10).await.unwrap();
    assert_eq!(
        expired,
        [old.id],
        "held files and other buckets are not expired"
    );
    assert!(
        store
            .expired_files(&default, at - time::Duration::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A held file cannot be deleted; released, it can.
    let delete = |id| {
        let store = store.clone();
        async move {
            store
                .delete_file(id, now(), job("carafe.files", now()), audit("file.delete"))
                .await
                .unwrap()
        }
    };
    assert!(delete(held.id).await.is_none());
    assert!(store.get_file(held.id).await.unwrap().is_some());
    store
        .set_legal_hold(held.id, false, now(), audit("file.legal_hold"))
        .await
        .unwrap()
        .unwrap();
    assert!(delete(held.id).await.is_some());
    assert!(
        store
            .set_legal_hold(held.id, true, now(), audit("file.legal_hold"))
            .await
            .unwrap()
            .is_none(),
        "deleted files cannot be held"
    );
    let _ = other;
}

pub async fn files_encryption_is_kept_and_rewrapped(store: Arc<dyn Store>) {
    store.put_bucket(bucket("default", 0), false).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5u8 {
        let mut f = new_file("default", None);
        f.encryption = (n != 4).then(|| wrapped_key(if n == 3 { "new" } else { "old" }, n));
        let rec = store
            .insert_file(f, job("carafe.files", now()), audit("file.upload"))
            .await
            .unwrap();
        assert_eq!(store.get_file(rec.id).await.unwrap().unwrap(), rec);
        ids.push(rec.id);
    }
    assert_eq!(
        store.get_file(ids[0]).await.unwrap().unwrap().encryption,
        Some(wrapped_key("old", 0))
    );
    // Deleted files are rewrapped too: their bytes are still there until purged.
    store
        .delete_file(
            ids[1],
            now(),
            job("carafe.files", now()),
            audit("file.delete"),
        )
        .await
        .unwrap();
    rewrap_in_pages(
        &ids,
        async |after, limit| {
            store
                .files_not_under_key("new", after, limit)
                .await
                .unwrap()
        },
        async |rows| store.set_file_encryption(&rows).await.unwrap(),
    )
    .await;
    assert_eq!(
        store.get_file(ids[2]).await.unwrap().unwrap().encryption,
        Some(wrapped_key("new", 2))
    );
    assert_eq!(
        store.get_file(ids[4]).await.unwrap().unwrap().encryption,
        None
    );
}
