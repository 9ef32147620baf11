//! Large files Carafe itself sends to S3 in parts: each multipart upload is recorded in the
//! database while it is under way, so none is ever lost. A finished upload leaves no record;
//! one whose sender went away is aborted at once; one a crash left behind is aborted by the
//! sweep once past the cut-off, and not before (another instance may still be sending it).

use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use carafe::files::lifecycle::ABANDONED_MULTIPART_AGE;
use carafe::files::receive::body::receive;
use carafe::files::store::storage::temp::Received;
use carafe_core::files::MultipartRecord;
use carafe_core::time::now;

use crate::files::upload_ready;
use crate::helpers::{Backend, TestApp, eventually};

s3_tests!(
    large_uploads_store_their_bytes_and_leave_no_record,
    crashed_uploads_are_aborted_by_the_sweep,
    the_sweep_leaves_young_uploads_alone,
    uploads_dropped_midway_are_aborted_at_once,
    failed_uploads_are_aborted_and_forgotten,
    uploads_the_sweep_cannot_abort_keep_their_record,
);

const MIB: usize = 1024 * 1024;

fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 23) as u8).collect()
}

/// The multipart uploads the store still records, whatever their age.
async fn records(app: &TestApp) -> Vec<MultipartRecord> {
    let store = app.state.files.store();
    store.stale_multiparts(now(), 100).await.unwrap()
}

/// A received (temporary) file holding `bytes`, as an upload leaves it before storing.
async fn received(app: &TestApp, bytes: Vec<u8>) -> Received {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    let dir = app.state.files.storage.temp_dir();
    receive(body, &dir, u64::MAX).await.unwrap()
}

/// A multipart upload with one part sent and its record written, as `put_received` leaves
/// them when the process dies mid-upload. Returns its id and the part's ETag.
async fn crashed_upload(app: &TestApp, key: &str) -> (String, String) {
    let s3 = app.state.files.storage.s3().unwrap();
    let upload_id = s3.create_multipart(key).await.unwrap();
    let record = MultipartRecord {
        key: key.into(),
        upload_id: upload_id.clone(),
        started_at: now(),
    };
    app.state
        .files
        .store()
        .record_multipart(record)
        .await
        .unwrap();
    let part = Bytes::from(text(1024));
    let etag = s3.put_part(key, &upload_id, 1, part).await.unwrap();
    (upload_id, etag)
}

/// Whether the upload was aborted: S3 then refuses new parts and the completion (S3 with
/// `NoSuchUpload`; s3s-fs with `AccessDenied`, as for any upload id it does not know), and
/// no object appears.
async fn assert_aborted(app: &TestApp, key: &str, upload_id: &str, etag: String) {
    let s3 = app.state.files.storage.s3().unwrap();
    let part = s3.put_part(key, upload_id, 2, Bytes::from(text(10))).await;
    assert!(part.is_err(), "a part of an aborted upload: {part:?}");
    let done = s3.complete_multipart(key, upload_id, vec![etag]).await;
    assert!(done.is_err(), "completing an aborted upload: {done:?}");
    assert!(!app.has_object(key).await);
}

async fn large_uploads_store_their_bytes_and_leave_no_record(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 20 MiB is over the single-PUT size: 8 + 8 + 4 MiB parts.
    let bytes = text(20 * MIB + 17);
    let file = upload_ready(&app, "big.txt", bytes.clone()).await;
    let id = file["id"].as_str().unwrap();
    assert!(
        app.object(&format!("objects/{id}")).await == bytes,
        "the same bytes"
    );
    assert_eq!(records(&app).await, []);
    // Stored directly, too: more parts than are in flight at once, the last one short.
    let bytes = text(41 * MIB + 3);
    let storage = &app.state.files.storage;
    let upload = received(&app, bytes.clone()).await;
    storage
        .put_received("incoming/direct", upload)
        .await
        .unwrap();
    assert!(
        app.object("incoming/direct").await == bytes,
        "the same bytes"
    );
    assert_eq!(records(&app).await, []);
}

async fn crashed_uploads_are_aborted_by_the_sweep(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = "incoming/crashed";
    let (upload_id, etag) = crashed_upload(&app, key).await;
    let storage = &app.state.files.storage;
    assert_eq!(storage.sweep_multiparts(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(records(&app).await, []);
    assert_aborted(&app, key, &upload_id, etag).await;
    assert_eq!(storage.sweep_multiparts(Duration::ZERO).await.unwrap(), 0);
}

async fn the_sweep_leaves_young_uploads_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = "incoming/slow";
    let (upload_id, etag) = crashed_upload(&app, key).await;
    // An hour short of the cut-off: perhaps another instance still sending a large file.
    let store = app.state.files.store();
    let older = MultipartRecord {
        key: "incoming/older".into(),
        upload_id: "not-aborted".into(),
        started_at: now() - (ABANDONED_MULTIPART_AGE - Duration::from_secs(3600)),
    };
    store.record_multipart(older.clone()).await.unwrap();
    let storage = &app.state.files.storage;
    let swept = storage.sweep_multiparts(ABANDONED_MULTIPART_AGE).await;
    assert_eq!(swept.unwrap(), 0);
    assert_eq!(records(&app).await.len(), 2);
    // The upload is still live: it completes.
    let s3 = storage.s3().unwrap();
    s3.complete_multipart(key, &upload_id, vec![etag])
        .await
        .unwrap();
    assert!(app.object(key).await == text(1024), "the completed object");
    assert!(store.forget_multipart(key, &upload_id).await.unwrap());
    assert_eq!(records(&app).await, [older]);
}

async fn uploads_dropped_midway_are_aborted_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = "incoming/dropped";
    let upload = received(&app, text(40 * MIB)).await;
    let storage = &app.state.files.storage;
    let mut put = Box::pin(storage.put_received(key, upload));
    // Driven by hand until the upload is recorded (before any part is sent), then dropped —
    // as when the request sending the file goes away.
    let record = loop {
        if let Poll::Ready(r) = futures::poll!(put.as_mut()) {
            panic!("the upload ended before it was seen recorded: {r:?}");
        }
        if let Some(record) = records(&app).await.pop() {
            break record;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(record.key, key);
    drop(put);
    eventually(Duration::from_secs(20), || async {
        records(&app).await.is_empty()
    })
    .await;
    let s3 = storage.s3().unwrap();
    let part = s3
        .put_part(key, &record.upload_id, 1, Bytes::from(text(10)))
        .await;
    assert!(part.is_err(), "a part of an aborted upload: {part:?}");
    assert!(!app.has_object(key).await);
}

async fn failed_uploads_are_aborted_and_forgotten(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = "incoming/failed";
    // The file holds fewer bytes than its size says: reading the third part fails.
    let mut upload = received(&app, text(20 * MIB)).await;
    upload.size = 30 * MIB as u64;
    let storage = &app.state.files.storage;
    let err = storage.put_received(key, upload).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(records(&app).await, []);
    assert!(!app.has_object(key).await);
}

async fn uploads_the_sweep_cannot_abort_keep_their_record(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The S3 server refuses to abort this one (its id is malformed: 400 InvalidRequest).
    let stuck = MultipartRecord {
        key: "incoming/stuck".into(),
        upload_id: "not-an-upload-id".into(),
        started_at: now() - Duration::from_secs(60),
    };
    let store = app.state.files.store();
    store.record_multipart(stuck.clone()).await.unwrap();
    let key = "incoming/crashed";
    let (upload_id, etag) = crashed_upload(&app, key).await;
    // The other record is still aborted; this one waits for the next sweep.
    let storage = &app.state.files.storage;
    assert_eq!(storage.sweep_multiparts(Duration::ZERO).await.unwrap(), 1);
    assert_aborted(&app, key, &upload_id, etag).await;
    assert_eq!(records(&app).await, std::slice::from_ref(&stuck));
    assert_eq!(storage.sweep_multiparts(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(records(&app).await, [stuck]);
}
