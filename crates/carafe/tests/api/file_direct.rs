//! Direct uploads: the client sends the bytes straight to storage (a signed Carafe URL on
//! local disk, presigned S3 URLs on S3), then completes; what arrived is checked (size, type)
//! and processed like any other upload. Lies in size or type are refused and leave nothing.

use std::time::Duration;

use carafe::config::HumanDuration;
use serde_json::{Value, json};

use crate::files::{pdf, png};
use crate::helpers::{Backend, TestApp, problem};

file_tests!(
    direct_uploads_refuse_lies_about_type;
    // Carafe's own signed upload URLs, used on local disk only.
    local:
        direct_uploads_on_disk_round_trip,
        direct_uploads_refuse_lies_about_size,
        direct_upload_urls_are_signed_and_expire;
    // Presigned S3 URLs (single PUTs and parts) and S3 multipart uploads.
    s3:
        direct_uploads_to_s3_with_a_presigned_put,
        direct_uploads_to_s3_in_presigned_parts,
        direct_uploads_to_s3_refuse_lies_about_size,
        expired_direct_uploads_to_s3_are_aborted,
        a_direct_upload_that_cannot_be_aborted_does_not_stop_the_sweep,
);

async fn start(app: &TestApp, name: &str, size: usize) -> reqwest::Response {
    app.post_json(
        "/api/v1/files/direct",
        Some(&app.admin_key),
        &json!({"name": name, "size": size}),
    )
    .await
}

async fn session(app: &TestApp, name: &str, size: usize) -> Value {
    let res = start(app, name, size).await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

/// PUTs `bytes` to a URL with a plain client, as a browser or another program would.
async fn put(url: &str, bytes: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .put(url)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn complete(app: &TestApp, id: &str, query: &str, body: &Value) -> reqwest::Response {
    app.post_json(
        &format!("/api/v1/files/{id}/complete{query}"),
        Some(&app.admin_key),
        body,
    )
    .await
}

async fn content(app: &TestApp, id: &str) -> Vec<u8> {
    let res = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

/// Sends the bytes as the session says and completes, waiting for processing.
async fn upload_direct(app: &TestApp, name: &str, bytes: &[u8]) -> Value {
    let s = session(app, name, bytes.len()).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let mut parts = Vec::new();
    if let Some(planned) = s["parts"].as_array() {
        for p in planned {
            let (a, b) = (
                p["range_start"].as_u64().unwrap(),
                p["range_end"].as_u64().unwrap(),
            );
            assert!(b - a + 1 >= 5 * 1024 * 1024 || b as usize == bytes.len() - 1);
            let res = put(
                p["url"].as_str().unwrap(),
                bytes[a as usize..=b as usize].to_vec(),
            )
            .await;
            assert_eq!(res.status(), 200);
            let etag = res.headers()["etag"].to_str().unwrap().to_owned();
            parts.push(json!({"part_number": p["part_number"], "etag": etag}));
        }
    } else {
        assert_eq!(s["method"], "PUT");
        let res = put(s["url"].as_str().unwrap(), bytes.to_vec()).await;
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }
    let res = complete(app, &id, "?wait=30", &json!({"parts": parts})).await;
    let status = res.status();
    let file: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "processed within the wait: {file}");
    assert_eq!(file["id"], id.as_str(), "the session's id is the file's");
    assert_eq!(file["status"], "ready", "{file}");
    file
}

async fn direct_uploads_on_disk_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = pdf("sent directly");
    let file = upload_direct(&app, "direct.pdf", &bytes).await;
    let id = file["id"].as_str().unwrap();
    assert_eq!(file["size"], bytes.len());
    assert_eq!(content(&app, id).await, bytes);
    // Completing again says so (the file is already there).
    let res = complete(&app, id, "", &json!({})).await;
    let body = problem(res, 409, "upload_completed").await;
    assert_eq!(body["file"], id);
}

async fn direct_uploads_refuse_lies_about_size(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Declared sizes and names are checked before anything is sent.
    problem(
        start(&app, "huge.pdf", 1 << 40).await,
        413,
        "file_too_large",
    )
    .await;
    problem(start(&app, "tool.exe", 10).await, 415, "type_not_allowed").await;
    problem(start(&app, "empty.pdf", 0).await, 400, "file_empty").await;
    let typed = |name: &str, kind: &str| json!({"name": name, "size": 10, "type": kind});
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&app.admin_key),
            &typed("a.pdf", "png"),
        )
        .await;
    problem(res, 415, "type_not_allowed").await;
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&app.admin_key),
            &typed("a.pdf", "pdf"),
        )
        .await;
    assert_eq!(res.status(), 201);
    let bytes = pdf("sized");
    let s = session(&app, "sized.pdf", bytes.len()).await;
    let (id, url) = (s["id"].as_str().unwrap(), s["url"].as_str().unwrap());
    let fewer = put(url, bytes[..bytes.len() - 1].to_vec()).await;
    problem(fewer, 422, "size_mismatch").await;
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"extra");
    problem(put(url, longer).await, 422, "size_mismatch").await;
    assert!(!app.has_object(&format!("incoming/{id}")).await);
    // Nothing arrived: completing is refused and may be tried again.
    problem(
        complete(&app, id, "", &json!({})).await,
        400,
        "upload_missing",
    )
    .await;
    assert_eq!(put(url, bytes.clone()).await.status(), 200);
    let res = complete(&app, id, "?wait=30", &json!({})).await;
    assert_eq!(res.status(), 201);
}

async fn direct_uploads_refuse_lies_about_type(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = png(20, 20);
    let s = session(&app, "not-really.pdf", bytes.len()).await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(put(s["url"].as_str().unwrap(), bytes).await.status(), 200);
    // On S3 a single PUT lands in `direct/` until `complete` moves it to `incoming/`.
    let landed = if backend.s3() {
        format!("direct/{id}")
    } else {
        format!("incoming/{id}")
    };
    assert!(app.has_object(&landed).await);
    let res = complete(&app, id, "", &json!({})).await;
    assert_eq!(res.status(), 415);
    // Nothing is left: no object, no session, no file.
    assert!(!app.has_object(&landed).await);
    assert!(!app.has_object(&format!("incoming/{id}")).await);
    problem(complete(&app, id, "", &json!({})).await, 404, "not_found").await;
    let res = app
        .get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 404);
}

async fn direct_upload_urls_are_signed_and_expire(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.direct_ttl = HumanDuration(Duration::from_secs(2));
    })
    .await;
    let bytes = pdf("signed");
    let s = session(&app, "signed.pdf", bytes.len()).await;
    let (id, url) = (s["id"].as_str().unwrap(), s["url"].as_str().unwrap());
    let tampered = url.replace("signature=", "signature=x");
    problem(put(&tampered, bytes.clone()).await, 403, "link_invalid").await;
    let other = session(&app, "other.pdf", bytes.len()).await;
    let moved = url.replace(id, other["id"].as_str().unwrap());
    problem(put(&moved, bytes.clone()).await, 403, "link_invalid").await;
    let unsigned = url.split('?').next().unwrap();
    problem(put(unsigned, bytes.clone()).await, 403, "link_invalid").await;
    // Someone else's token cannot complete it.
    let user = app.user_token("mallory", &["files"]).await;
    let res = app
        .post_json(
            &format!("/api/v1/files/{id}/complete"),
            Some(&user),
            &json!({}),
        )
        .await;
    problem(res, 404, "not_found").await;
    // Past its expiry the URL and the session are refused. Both sessions must have expired
    // before the sweep below (`other` was opened a little later: on a loaded machine, later
    // enough that waiting for the first alone left it open).
    let expiry = |v: &Value| {
        time::OffsetDateTime::parse(
            v["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let expires = expiry(&s).max(expiry(&other));
    let left = expires - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs() + Duration::from_millis(50)).await;
    }
    problem(put(url, bytes).await, 403, "link_expired").await;
    problem(
        complete(&app, id, "", &json!({})).await,
        410,
        "upload_expired",
    )
    .await;
    // The server's own sweep may have taken some first: what counts is that both are gone.
    let swept = app.state.files.sweep_direct().await.unwrap();
    assert!(swept <= 2, "{swept}");
    for gone in [id, other["id"].as_str().unwrap()] {
        problem(complete(&app, gone, "", &json!({})).await, 404, "not_found").await;
    }
}

async fn spawn_s3(backend: Backend, single_max: u64) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.files.direct_single_max = single_max;
        c.files.direct_part_size = 5 * 1024 * 1024;
    })
    .await
}

async fn direct_uploads_to_s3_with_a_presigned_put(backend: Backend) {
    let app = spawn_s3(backend, 64 * 1024 * 1024).await;
    let bytes = pdf("straight to s3");
    let s = session(&app, "s3-direct.pdf", bytes.len()).await;
    let (id, url) = (s["id"].as_str().unwrap(), s["url"].as_str().unwrap());
    assert_eq!(put(url, bytes.clone()).await.status(), 200);
    let res = complete(&app, id, "?wait=30", &json!({})).await;
    assert_eq!(res.status(), 201);
    // The URL still works until it expires, but cannot replace what was checked.
    let mut other = pdf("swapped after the checks");
    other.truncate(bytes.len());
    assert_eq!(put(url, other).await.status(), 200);
    assert!(app.has_object(&format!("objects/{id}")).await);
    assert_eq!(content(&app, id).await, bytes);
    let file = upload_direct(&app, "again.pdf", &bytes).await;
    assert_eq!(content(&app, file["id"].as_str().unwrap()).await, bytes);
}

async fn direct_uploads_to_s3_in_presigned_parts(backend: Backend) {
    let app = spawn_s3(backend, 1024 * 1024).await;
    let bytes: Vec<u8> = (0..12 * 1024 * 1024)
        .map(|i| b'a' + (i % 23) as u8)
        .collect();
    let s = session(&app, "probe.txt", bytes.len()).await;
    assert_eq!(s["parts"].as_array().unwrap().len(), 3, "5 + 5 + 2 MiB");
    // A part list with a gap is refused; the upload stays open.
    let res = complete(
        &app,
        s["id"].as_str().unwrap(),
        "",
        &json!({"parts": [
        {"part_number": 2, "etag": "\"x\""}]}),
    )
    .await;
    problem(res, 400, "invalid_parts").await;
    let file = upload_direct(&app, "big.txt", &bytes).await;
    let id = file["id"].as_str().unwrap();
    assert_eq!(file["size"], bytes.len());
    assert!(content(&app, id).await == bytes, "identical bytes");
}

async fn direct_uploads_to_s3_refuse_lies_about_size(backend: Backend) {
    let app = spawn_s3(backend, 64 * 1024 * 1024).await;
    let bytes = pdf("short");
    let s = session(&app, "short.pdf", bytes.len() + 10).await;
    let id = s["id"].as_str().unwrap();
    let res = put(s["url"].as_str().unwrap(), bytes).await;
    assert_eq!(res.status(), 200, "S3 takes it; complete judges it");
    let body = problem(
        complete(&app, id, "", &json!({})).await,
        422,
        "size_mismatch",
    )
    .await;
    assert_eq!(body["declared"], body["actual"].as_u64().unwrap() + 10);
    assert!(!app.has_object(&format!("incoming/{id}")).await);
}

async fn expired_direct_uploads_to_s3_are_aborted(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.direct_single_max = 1;
        c.files.direct_ttl = HumanDuration(Duration::from_secs(2));
    })
    .await;
    let bytes = pdf("abandoned");
    let s = session(&app, "abandoned.pdf", bytes.len()).await;
    let id: carafe_core::files::FileId = s["id"].as_str().unwrap().parse().unwrap();
    let part = &s["parts"][0];
    let res = put(part["url"].as_str().unwrap(), bytes).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let upload_id = app
        .state
        .files
        .store()
        .get_direct(id)
        .await
        .unwrap()
        .unwrap()
        .multipart
        .expect("a multipart upload");
    // Nothing is swept before the expiry; after it, the multipart upload is aborted.
    assert_eq!(app.state.files.sweep_direct().await.unwrap(), 0);
    let expires = app
        .state
        .files
        .store()
        .get_direct(id)
        .await
        .unwrap()
        .unwrap()
        .expires_at;
    let left = expires - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs() + Duration::from_millis(50)).await;
    }
    assert_eq!(app.state.files.sweep_direct().await.unwrap(), 1);
    assert!(
        app.state
            .files
            .store()
            .get_direct(id)
            .await
            .unwrap()
            .is_none()
    );
    let s3 = app.state.files.storage.s3().unwrap();
    let key = format!("incoming/{id}");
    assert!(
        s3.complete_multipart(&key, &upload_id, vec![etag])
            .await
            .is_err(),
        "the multipart upload is gone"
    );
    assert!(!app.has_object(&key).await);
}

/// An open session as `start_direct` leaves it, expired `ago`; its multipart id is set later.
fn expired_session(ago: time::Duration) -> carafe_core::files::DirectUpload {
    use carafe_core::files::{BucketName, DirectState, DirectUpload, FileId};
    let at = time::OffsetDateTime::now_utc();
    DirectUpload {
        id: FileId::new(),
        bucket: BucketName::default_bucket(),
        owner: None,
        name: "abandoned.pdf".into(),
        size: 42,
        metadata: json!({}),
        state: DirectState::Open,
        multipart: None,
        created_at: at - time::Duration::HOUR,
        expires_at: at - ago,
    }
}

async fn a_direct_upload_that_cannot_be_aborted_does_not_stop_the_sweep(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.state.files.store();
    let s3 = app.state.files.storage.s3().unwrap();
    // The oldest session names an upload that was aborted already. Real S3 answers
    // `404 NoSuchUpload` (gone: the session is removed); s3s-fs answers `403 AccessDenied`,
    // which cannot be told from a refusal, so the session stays for a later sweep to retry.
    let mut stuck = expired_session(time::Duration::minutes(10));
    let stuck_key = format!("incoming/{}", stuck.id);
    let gone = s3.create_multipart(&stuck_key).await.unwrap();
    s3.abort_multipart(&stuck_key, &gone).await.unwrap();
    stuck.multipart = Some(gone);
    store.insert_direct(stuck.clone()).await.unwrap();
    // A newer one has a real multipart upload with a part sent.
    let mut healthy = expired_session(time::Duration::minutes(1));
    let key = format!("incoming/{}", healthy.id);
    let upload_id = s3.create_multipart(&key).await.unwrap();
    let etag = s3
        .put_part(&key, &upload_id, 1, pdf("abandoned").into())
        .await
        .unwrap();
    healthy.multipart = Some(upload_id.clone());
    store.insert_direct(healthy.clone()).await.unwrap();

    let removed = app.state.files.sweep_direct().await.unwrap();
    let stuck_left = store.get_direct(stuck.id).await.unwrap().is_some();
    // The server's own sweep (at start, then every few seconds) may take some of them first:
    // what is left is what counts.
    assert!(removed <= if stuck_left { 1 } else { 2 }, "{removed}");
    assert!(store.get_direct(healthy.id).await.unwrap().is_none());
    assert!(
        s3.complete_multipart(&key, &upload_id, vec![etag])
            .await
            .is_err(),
        "the healthy session's multipart upload is aborted"
    );
    assert!(!app.has_object(&key).await);
    // A later sweep tries the stuck one again and still succeeds.
    let again = app.state.files.sweep_direct().await.unwrap();
    assert_eq!(again, 0, "a session that cannot be aborted is not counted");
}
