//! `Idempotency-Key` on creating POSTs: replay, conflicts, and isolation between callers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    the_same_key_and_body_replays_the_first_answer,
    the_same_key_with_another_body_is_a_conflict,
    keys_are_scoped_to_the_caller,
    failed_requests_can_be_retried_with_the_same_key,
    uploads_replay_without_buffering_their_bodies,
);

async fn post_with_key(app: &TestApp, auth: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/keys", Some(auth))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn key_count(app: &TestApp) -> usize {
    let list: Value = app
        .list_keys(&app.admin_key, "")
        .await
        .json()
        .await
        .unwrap();
    list["items"].as_array().unwrap().len()
}

async fn the_same_key_and_body_replays_the_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"name": "once", "scopes": ["files"]});
    let first = post_with_key(&app, &app.admin_key, "create-once-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();

    let again = post_with_key(&app, &app.admin_key, "create-once-1", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.headers()["content-type"], "application/json");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again, first,
        "the replay is the first answer, secret included"
    );
    assert_eq!(key_count(&app).await, 2, "bootstrap key + one, not two");

    // Without the header, the same body creates another key.
    app.post_json("/api/v1/keys", Some(&app.admin_key), &body)
        .await;
    assert_eq!(key_count(&app).await, 3);
}

async fn the_same_key_with_another_body_is_a_conflict(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = post_with_key(
        &app,
        &app.admin_key,
        "k-2",
        &json!({"name": "a", "scopes": ["files"]}),
    )
    .await;
    assert_eq!(first.status(), 201);
    let other = post_with_key(
        &app,
        &app.admin_key,
        "k-2",
        &json!({"name": "b", "scopes": ["files"]}),
    )
    .await;
    problem(other, 409, "idempotency_key_reused").await;
    assert_eq!(key_count(&app).await, 2);
    let res = post_with_key(
        &app,
        &app.admin_key,
        &"k".repeat(300),
        &json!({"name": "a", "scopes": ["files"]}),
    )
    .await;
    problem(res, 400, "invalid_idempotency_key").await;
}

async fn keys_are_scoped_to_the_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other_admin = app.new_key(&["admin"]).await;
    let body = json!({"name": "shared", "scopes": ["files"]});
    let a: Value = post_with_key(&app, &app.admin_key, "same", &body)
        .await
        .json()
        .await
        .unwrap();
    let res = post_with_key(&app, &other_admin, "same", &body).await;
    assert_eq!(res.status(), 201);
    assert!(res.headers().get("idempotent-replayed").is_none());
    let b: Value = res.json().await.unwrap();
    assert_ne!(
        a["id"], b["id"],
        "another caller's key never replays someone else's answer"
    );
}

async fn failed_requests_can_be_retried_with_the_same_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let files = app.new_key(&["files"]).await;
    let body = json!({"name": "retry", "scopes": ["files"]});
    // 403 is not stored: the same caller may not replay it, and a 403 tells nothing new.
    problem(
        post_with_key(&app, &files, "retry-1", &body).await,
        403,
        "insufficient_scope",
    )
    .await;
    problem(
        post_with_key(&app, &files, "retry-1", &body).await,
        403,
        "insufficient_scope",
    )
    .await;
    // A 422 is the answer for that body and is replayed.
    let bad = json!({"name": "retry", "scopes": ["nope"]});
    problem(
        post_with_key(&app, &app.admin_key, "retry-2", &bad).await,
        422,
        "validation_failed",
    )
    .await;
    let res = post_with_key(&app, &app.admin_key, "retry-2", &bad).await;
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(res.status(), 422);
}

async fn uploads_replay_without_buffering_their_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let app = &app;
        async move {
            app.request(
                Method::POST,
                &format!("/api/v1/files?name={name}"),
                Some(&app.admin_key),
            )
            .header("idempotency-key", "upload-1")
            .body(bytes)
            .send()
            .await
            .unwrap()
        }
    };
    // Larger than the JSON body limit: the body is streamed, never buffered for the key.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let first = upload("a.txt", big.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = upload("a.txt", big).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same file, not a second one");
    let other = upload("b.txt", b"other".to_vec()).await;
    problem(other, 409, "idempotency_key_reused").await;
    let files = app.files().await;
    assert_eq!(files.len(), 1);
}
