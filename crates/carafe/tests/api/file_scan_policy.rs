//! Scan policies without a scanner: `auto` (the default) serves files marked `unscanned`, while
//! a bucket that says `required` refuses every upload before reading it and never serves a file
//! unscanned, whenever the file arrived. Also the migration that keeps the `default` bucket of
//! an existing database on `auto`.

use std::time::Duration;

use carafe::config::HumanDuration;
use futures::{StreamExt, stream};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::file_processing::{processed, put_bucket};
use crate::files::{pdf, upload_raw, upload_ready};
use crate::helpers::{Backend, TestApp, problem};
use crate::tus::{metadata, tus};

both_backends!(
    a_bucket_that_requires_scanning_refuses_uploads_without_a_scanner,
    a_direct_upload_is_not_completed_into_a_bucket_that_requires_scanning,
    files_of_a_required_bucket_are_never_served_unscanned,
    auto_serves_files_unscanned_without_a_scanner,
    existing_default_buckets_move_to_auto,
);

async fn bucket_scan(app: &TestApp, name: &str) -> Value {
    let bucket: Value = app
        .get(&format!("/api/v1/buckets/{name}"), Some(&app.admin_key))
        .await
        .json()
        .await
        .unwrap();
    bucket["policy"]["scan"].clone()
}

/// A body that sends a little and then never ends: answered only by a server that does not
/// wait for it.
fn endless_body() -> reqwest::Body {
    let first = stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from(pdf("start"))) });
    reqwest::Body::wrap_stream(first.chain(stream::pending()))
}

/// Sends `request`, which must be answered within 10 s (without its body being read).
async fn answered(request: reqwest::RequestBuilder) -> Response {
    tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("answered without reading the body")
        .unwrap()
}

async fn scanner_unavailable(res: Response) {
    let body = problem(res, 503, "scanner_unavailable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("scanning"),
        "{body}"
    );
}

/// What the refused uploads must not have left: no file, no upload, no object, no audit event
/// of anything created.
async fn nothing_stored(app: &TestApp) {
    assert!(app.files().await.is_empty(), "no file row");
    for prefix in ["incoming", "objects", "uploads"] {
        assert!(app.objects(prefix).await.is_empty(), "nothing in {prefix}/");
    }
    assert!(app.temp_files().is_empty(), "no temporary file");
    for actions in ["file.*", "upload.*"] {
        let created = app.audit_items(&format!("?action={actions}")).await;
        assert!(created.is_empty(), "{created:?}");
    }
}

async fn a_bucket_that_requires_scanning_refuses_uploads_without_a_scanner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    put_bucket(
        &app,
        "strict",
        json!({"allowed_types": ["pdf"], "scan": "required"}),
    )
    .await;
    let key = app.admin_key.clone();

    // POST /api/v1/files: raw and multipart, with bodies that never end.
    let res = upload_raw(&app, &key, "?bucket=strict", "a.pdf", pdf("raw")).await;
    scanner_unavailable(res).await;
    let raw = app
        .request(
            Method::POST,
            "/api/v1/files?bucket=strict&name=a.pdf",
            Some(&key),
        )
        .header("content-type", "application/octet-stream")
        .body(endless_body());
    scanner_unavailable(answered(raw).await).await;
    let form = app
        .request(Method::POST, "/api/v1/files?bucket=strict", Some(&key))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(endless_body());
    scanner_unavailable(answered(form).await).await;

    // tus creation, without and with a first chunk.
    let meta = metadata(&[("filename", "a.pdf"), ("bucket", "strict")]);
    let res = tus(&app, Method::POST, "/api/v1/uploads", &key)
        .header("upload-length", "100")
        .header("upload-metadata", &meta)
        .send()
        .await
        .unwrap();
    scanner_unavailable(res).await;
    let with_upload = tus(&app, Method::POST, "/api/v1/uploads", &key)
        .header("upload-length", "100000")
        .header("upload-metadata", &meta)
        .header("content-type", "application/offset+octet-stream")
        .body(endless_body());
    scanner_unavailable(answered(with_upload).await).await;

    // Direct uploads.
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&key),
            &json!({"bucket": "strict", "name": "a.pdf", "size": 100}),
        )
        .await;
    scanner_unavailable(res).await;

    nothing_stored(&app).await;
    // The default bucket still takes uploads.
    let file = upload_ready(&app, "fine.pdf", pdf("default")).await;
    assert_eq!(file["scan"]["result"], "unscanned", "{file}");
    assert!(!app.audit_items("?action=file.*").await.is_empty());
}

async fn a_direct_upload_is_not_completed_into_a_bucket_that_requires_scanning(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    put_bucket(&app, "later", json!({"allowed_types": ["pdf"]})).await;
    let bytes = pdf("sent before the policy changed");
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&app.admin_key),
            &json!({"bucket": "later", "name": "a.pdf", "size": bytes.len()}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let res = reqwest::Client::new()
        .put(session["url"].as_str().unwrap())
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    put_bucket(
        &app,
        "later",
        json!({"allowed_types": ["pdf"], "scan": "required"}),
    )
    .await;
    let complete = format!("/api/v1/files/{id}/complete");
    let res = app
        .post_json(&complete, Some(&app.admin_key), &json!({}))
        .await;
    scanner_unavailable(res).await;
    let res = app
        .get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 404, "no file row");
    assert!(!app.has_object(&format!("objects/{id}")).await);

    // The session stays open: once the bucket can take the file, it completes.
    put_bucket(&app, "later", json!({"allowed_types": ["pdf"]})).await;
    let res = app
        .post_json(
            &format!("{complete}?wait=30"),
            Some(&app.admin_key),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["status"], "ready", "{file}");
}

async fn files_of_a_required_bucket_are_never_served_unscanned(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.scan_attempts = 2;
        c.files.scan_retry_base = HumanDuration(Duration::from_millis(10));
    })
    .await;
    put_bucket(&app, "b", json!({"allowed_types": ["pdf"]})).await;
    // Processing waits while the bucket is changed to require scanning.
    let queue = "/api/v1/queues/carafe.files";
    let res = app
        .post_json(&format!("{queue}/pause"), Some(&app.admin_key), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let res = upload_raw(&app, &app.admin_key, "?bucket=b", "a.pdf", pdf("early")).await;
    assert_eq!(res.status(), 202);
    let file: Value = res.json().await.unwrap();
    let id = file["id"].as_str().unwrap().to_owned();
    put_bucket(
        &app,
        "b",
        json!({"allowed_types": ["pdf"], "scan": "required"}),
    )
    .await;
    let res = app
        .post_json(&format!("{queue}/resume"), Some(&app.admin_key), &json!({}))
        .await;
    assert_eq!(res.status(), 200);

    let file = processed(&app, &id).await;
    assert_eq!(file["status"], "quarantined", "{file}");
    assert_eq!(file["error"]["code"], "scanner_unavailable");
    let job = app.job(file["job_id"].as_i64().unwrap()).await;
    assert_eq!(job["attempt"], 2, "retried before giving up: {job}");
    let res = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await;
    problem(res, 409, "file_not_ready").await;
    assert!(!app.has_object(&format!("objects/{id}")).await);
    assert!(app.has_object(&format!("quarantine/{id}")).await);
}

async fn auto_serves_files_unscanned_without_a_scanner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(bucket_scan(&app, "default").await, "auto");
    // A bucket whose policy leaves `scan` out gets `auto` too.
    put_bucket(&app, "plain", json!({"allowed_types": ["pdf"]})).await;
    assert_eq!(bucket_scan(&app, "plain").await, "auto");
    for query in ["?wait=30", "?wait=30&bucket=plain"] {
        let res = upload_raw(&app, &app.admin_key, query, "a.pdf", pdf(query)).await;
        assert_eq!(res.status(), 201);
        let file: Value = res.json().await.unwrap();
        assert_eq!(file["status"], "ready", "{file}");
        assert_eq!(file["scan"]["result"], "unscanned", "{file}");
    }
}

/// Runs one SQL statement on the app's database, whichever it is.
async fn execute(app: &TestApp, statement: &'static str) {
    let config = &app.state.config;
    match &config.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url.expose()).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let url = format!("sqlite://{}", config.sqlite_path().display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn existing_default_buckets_move_to_auto(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    // A database from before `auto`: the default bucket was stored with `required`.
    for name in ["default", "strict"] {
        put_bucket(&app, name, json!({"scan": "required"})).await;
    }
    execute(&app, "DELETE FROM _sqlx_migrations WHERE version = 16").await;
    app.begin_stop();
    app.wait_stopped().await.unwrap();

    let restarted = app.restarted(|_| {}).await;
    assert_eq!(bucket_scan(&restarted, "default").await, "auto");
    assert_eq!(
        bucket_scan(&restarted, "strict").await,
        "required",
        "only the default bucket changes"
    );
    let file = upload_ready(&restarted, "a.pdf", pdf("after the upgrade")).await;
    assert_eq!(file["scan"]["result"], "unscanned", "{file}");
}
