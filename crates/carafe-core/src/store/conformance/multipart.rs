//! Conformance checks for the record of S3 multipart uploads Carafe sends itself: the sweep
//! must see exactly the records at or past its cut-off, oldest first and no more than asked,
//! and forgetting one upload must never forget another.

use std::sync::Arc;

use crate::StoreError;
use crate::files::MultipartRecord;
use crate::store::Store;
use crate::time::{Duration, now};

fn record(key: &str, upload_id: &str, started_at: time::OffsetDateTime) -> MultipartRecord {
    MultipartRecord {
        key: key.into(),
        upload_id: upload_id.into(),
        started_at,
    }
}

async fn stale(store: &Arc<dyn Store>, before: time::OffsetDateTime, limit: u32) -> Vec<String> {
    store
        .stale_multiparts(before, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.upload_id)
        .collect()
}

pub async fn multipart_records_are_listed_stale_oldest_first(store: Arc<dyn Store>) {
    let t = now();
    let cut = t - Duration::hours(24);
    let at_cut = record("incoming/a", "u-at-cut", cut);
    let oldest = record("incoming/b", "u-oldest", cut - Duration::hours(3));
    let older = record("incoming/c", "u-older", cut - Duration::hours(1));
    let young = record("incoming/d", "u-young", cut + Duration::milliseconds(1));
    for r in [&young, &at_cut, &oldest, &older] {
        store.record_multipart(r.clone()).await.unwrap();
    }
    // Read back whole, oldest first; the cut-off is inclusive and one millisecond matters.
    let got = store.stale_multiparts(cut, 10).await.unwrap();
    assert_eq!(got, vec![oldest.clone(), older.clone(), at_cut.clone()]);
    assert_eq!(
        stale(&store, cut - Duration::milliseconds(1), 10).await,
        ["u-oldest", "u-older"]
    );
    assert_eq!(stale(&store, cut, 2).await, ["u-oldest", "u-older"]);
    assert_eq!(stale(&store, cut, 1).await, ["u-oldest"]);
    assert_eq!(
        stale(&store, t, 10).await,
        ["u-oldest", "u-older", "u-at-cut", "u-young"]
    );
    assert!(
        stale(&store, oldest.started_at - Duration::milliseconds(1), 10)
            .await
            .is_empty()
    );
}

pub async fn multipart_records_are_forgotten_one_upload_at_a_time(store: Arc<dyn Store>) {
    let t = now() - Duration::hours(48);
    let first = record("incoming/x", "u-1", t);
    let second = record("incoming/x", "u-2", t + Duration::seconds(1));
    let other = record("incoming/y", "u-1", t + Duration::seconds(2));
    for r in [&first, &second, &other] {
        store.record_multipart(r.clone()).await.unwrap();
    }
    // One key can have several uploads, and one id several keys: each pair is its own record.
    let err = store.record_multipart(first.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(!store.forget_multipart("incoming/x", "u-3").await.unwrap());
    assert!(!store.forget_multipart("incoming/z", "u-1").await.unwrap());
    assert!(store.forget_multipart("incoming/x", "u-1").await.unwrap());
    assert!(
        !store.forget_multipart("incoming/x", "u-1").await.unwrap(),
        "forgetting twice is not an error"
    );
    let left = store.stale_multiparts(now(), 10).await.unwrap();
    assert_eq!(left, vec![second.clone(), other.clone()]);
    assert!(store.forget_multipart("incoming/y", "u-1").await.unwrap());
    assert!(store.forget_multipart("incoming/x", "u-2").await.unwrap());
    assert!(store.stale_multiparts(now(), 10).await.unwrap().is_empty());
}
