//! Files over time: legal holds, bucket retention, and the sweep of leftovers a crash can
//! leave (temporary files, uploads stored but never recorded).

use std::time::Duration;

use carafe_core::files::{BucketName, FileId, NewFile};
use reqwest::Method;
use serde_json::{Value, json};

use crate::files::{pdf, upload_ready};
use crate::helpers::{Backend, TestApp, eventually, problem};

file_tests!(
    legal_holds_stop_deletion_until_released,
    retention_deletes_old_files_but_not_held_ones,
    unrecorded_uploads_are_swept;
    // Ages files on disk, and sweeps the local temporary directory.
    local: crash_leftovers_are_swept,
);

async fn hold(app: &TestApp, auth: &str, id: &str, on: bool) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/api/v1/files/{id}"), Some(auth))
        .json(&json!({"legal_hold": on}))
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, id: &str) -> reqwest::Response {
    app.request(
        Method::DELETE,
        &format!("/api/v1/files/{id}"),
        Some(&app.admin_key),
    )
    .send()
    .await
    .unwrap()
}

async fn legal_holds_stop_deletion_until_released(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = upload_ready(&app, "evidence.pdf", pdf("evidence")).await;
    let id = file["id"].as_str().unwrap();
    let res = hold(&app, &app.admin_key, id, true).await;
    assert_eq!(res.status(), 200);
    let held: Value = res.json().await.unwrap();
    assert_eq!(held["legal_hold"], true);
    problem(delete(&app, id).await, 409, "legal_hold").await;
    let user = app.user_token("u", &["files"]).await;
    problem(hold(&app, &user, id, false).await, 403, "api_key_required").await;
    let res = hold(&app, &app.admin_key, id, false).await;
    assert_eq!(res.status(), 200);
    assert_eq!(delete(&app, id).await.status(), 204);
    let missing = FileId::new().to_string();
    problem(
        hold(&app, &app.admin_key, &missing, true).await,
        404,
        "not_found",
    )
    .await;
    let events: Value = app
        .audit(&app.admin_key, "?limit=50")
        .await
        .json()
        .await
        .unwrap();
    let holds = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "file.legal_hold")
        .count();
    assert_eq!(holds, 2);
}

/// Records a file created `days` ago directly in the store (its bytes do not matter here).
async fn old_file(app: &TestApp, bucket: &str, days: i64) -> FileId {
    let files = &app.state.files;
    let id = FileId::new();
    let new = NewFile {
        id,
        bucket: BucketName::parse(bucket).unwrap(),
        name: "old.pdf".into(),
        size: 3,
        kind: "pdf".into(),
        mime: "application/pdf".into(),
        sha256: "00".repeat(32),
        owner: None,
        metadata: json!({}),
        created_at: carafe_core::time::now() - time::Duration::days(days),
        encryption: None,
    };
    let audit = carafe::context::Actor::cli().event("file.upload", None, json!({}));
    files
        .store()
        .insert_file(new, files.process_job(id), audit)
        .await
        .unwrap();
    id
}

async fn retention_deletes_old_files_but_not_held_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The files exist, one held, before their bucket gets a retention: the server's own
    // retention task may then run at any moment without changing what the test expects.
    let expired = old_file(&app, "logs", 31).await;
    let held = old_file(&app, "logs", 31).await;
    let young = old_file(&app, "logs", 29).await;
    let unlimited = old_file(&app, "default", 400).await;
    let res = hold(&app, &app.admin_key, &held.to_string(), true).await;
    assert_eq!(res.status(), 200);
    let res = app
        .request(Method::PUT, "/api/v1/buckets/logs", Some(&app.admin_key))
        .json(&json!({"allowed_types": ["pdf"], "retention_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let deleted = app.state.files.apply_retention().await.unwrap();
    assert!(
        deleted <= 1,
        "only the expired file (unless the server's task got it first)"
    );
    let store = app.state.files.store();
    assert!(store.get_file(expired).await.unwrap().is_none());
    for kept in [held, young, unlimited] {
        assert!(store.get_file(kept).await.unwrap().is_some());
    }
    let events: Value = app
        .audit(&app.admin_key, "?limit=50")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "file.expire"
                && e["target"] == format!("file:{expired}").as_str())
    );
}

async fn unrecorded_uploads_are_swept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let files = &app.state.files;
    // An upload stored but never recorded, and one a direct-upload session still claims.
    let orphan = format!("incoming/{}", FileId::new());
    app.put_object(&orphan, b"orphan".to_vec()).await;
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&app.admin_key),
            &json!({"name": "w.pdf", "size": 7}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    let waiting = format!("incoming/{}", session["id"].as_str().unwrap());
    app.put_object(&waiting, b"waiting".to_vec()).await;
    // Young leftovers may belong to an upload in progress: they stay.
    let hour = Duration::from_secs(3600);
    assert_eq!(files.sweep_incoming(hour).await.unwrap(), 0);
    assert!(app.has_object(&orphan).await);
    // Old enough (here: any age), the unrecorded one goes and the claimed one stays.
    assert_eq!(files.sweep_incoming(Duration::ZERO).await.unwrap(), 1);
    assert!(!app.has_object(&orphan).await);
    assert!(app.has_object(&waiting).await);
}

/// Makes a file look written two hours ago.
fn age(path: &std::path::Path) {
    let status = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn crash_leftovers_are_swept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let files = &app.state.files;
    let root = app.data_dir().join("files");
    // An upload stored but never recorded, an old temporary file, and a fresh one.
    std::fs::create_dir_all(root.join("incoming")).unwrap();
    let orphan = root.join(format!("incoming/{}", FileId::new()));
    std::fs::write(&orphan, b"orphan").unwrap();
    age(&orphan);
    let stale_tmp = root.join(".tmp/0123.part");
    std::fs::write(&stale_tmp, b"partial").unwrap();
    age(&stale_tmp);
    let fresh_tmp = root.join(".tmp/4567.part");
    std::fs::write(&fresh_tmp, b"in progress").unwrap();
    // A recorded upload still waiting for processing keeps its bytes, however old.
    let recorded = old_file(&app, "default", 0).await;
    let waiting = root.join(format!("incoming/{recorded}"));
    std::fs::write(&waiting, b"waiting").unwrap();
    age(&waiting);
    // (The server's own sweep, run at start, may get there first: judge by what remains.)
    assert!(
        files
            .sweep_incoming(Duration::from_secs(3600))
            .await
            .unwrap()
            <= 1
    );
    assert!(!orphan.exists());
    assert!(waiting.exists());
    assert!(
        files
            .storage
            .sweep_temp(Duration::from_secs(3600))
            .await
            .unwrap()
            <= 1
    );
    assert!(!stale_tmp.exists() && fresh_tmp.exists());
    // The same sweep runs at start: a new server on the same data dir removes leftovers.
    let again = root.join(format!("incoming/{}", FileId::new()));
    std::fs::write(&again, b"orphan").unwrap();
    age(&again);
    let state = app.state.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(state.files.clone().sweep(stop.clone()));
    eventually(Duration::from_secs(10), || async { !again.exists() }).await;
    stop.cancel();
}
