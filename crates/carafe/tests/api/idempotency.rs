//! `Idempotency-Key` on creating POSTs: replay, conflicts, and isolation between callers.

use std::path::Path;
use std::time::Duration;

use carafe::config::HumanDuration;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::{Backend, TestApp, eventually, problem};
use crate::process::serve;

both_backends!(
    the_same_key_and_body_replays_the_first_answer,
    the_same_key_with_another_body_is_a_conflict,
    keys_are_scoped_to_the_caller,
    failed_requests_can_be_retried_with_the_same_key,
    uploads_replay_without_buffering_their_bodies,
    a_request_outlasting_the_lock_keeps_its_key,
    a_crashed_request_frees_its_key_after_the_lock,
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

/// The raw upload the lock tests hold open, and its key.
const SLOW_PATH: &str = "/api/v1/files?name=slow.txt";
const SLOW_KEY: &str = "slow-1";
static SLOW_BODY: [u8; 64 * 1024] = [b's'; 64 * 1024];
/// How much of the body the slow request sends before it stalls.
const SLOW_SENT: usize = 4096;

/// Opens the slow upload on `addr` with `SLOW_KEY` and sends the first `SLOW_SENT` bytes of
/// its body, then waits until the server is receiving it (a temporary file exists under
/// `temp_dir`): the key was reserved before that.
async fn start_slow_upload(addr: &str, auth: &str, temp_dir: &Path) -> TcpStream {
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {SLOW_PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {auth}\r\n\
         Idempotency-Key: {SLOW_KEY}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        SLOW_BODY.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&SLOW_BODY[..SLOW_SENT]).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(temp_dir).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    slow
}

/// The same upload, whole, with the same key and the same content headers.
async fn upload_again(client: &reqwest::Client, base: &str, auth: &str) -> reqwest::Response {
    client
        .post(format!("{base}{SLOW_PATH}"))
        .bearer_auth(auth)
        .header("idempotency-key", SLOW_KEY)
        .header("content-type", "application/octet-stream")
        .body(SLOW_BODY.to_vec())
        .send()
        .await
        .unwrap()
}

/// An upload whose body arrives slowly runs longer than `limits.idempotency_lock`: its key
/// stays reserved the whole time, so a retry meanwhile is 409, and once the first answers the
/// retry replays it — one file, not two.
async fn a_request_outlasting_the_lock_keeps_its_key(backend: Backend) {
    let lock = Duration::from_secs(1);
    let app = TestApp::spawn_with(backend, |c| {
        c.limits.idempotency_lock = HumanDuration(lock);
    })
    .await;
    let addr = app.base.trim_start_matches("http://");
    let temp_dir = app.state.files.storage.temp_dir();
    let mut slow = start_slow_upload(addr, &app.admin_key, &temp_dir).await;
    // Reserved before now: without renewal, its lock would have lapsed by `lapsed`.
    let lapsed = Instant::now() + lock;
    tokio::time::sleep_until(lapsed).await;
    let retry = upload_again(&app.client, &app.base, &app.admin_key).await;
    problem(retry, 409, "idempotency_request_in_progress").await;

    slow.write_all(&SLOW_BODY[SLOW_SENT..]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let (_, json) = answer.split_once("\r\n\r\n").unwrap();
    let first: Value = serde_json::from_str(json).unwrap();

    let again = upload_again(&app.client, &app.base, &app.admin_key).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.files().await.len(), 1, "one upload stored, not two");
}

/// A server killed (SIGKILL) while a request holds a key renews it no more: the key frees
/// `limits.idempotency_lock` after the crash, and a retry with the same body then runs.
async fn a_crashed_request_frees_its_key_after_the_lock(backend: Backend) {
    let lock = Duration::from_secs(1);
    let cwd = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("CARAFE_SECRET_KEY", crate::helpers::SECRET.to_owned()),
        ("CARAFE_LIMITS__IDEMPOTENCY_LOCK", "1s".to_owned()),
    ];
    if backend.postgres() {
        let url = carafe_store_postgres::testing::fresh_database_url().await;
        env.push(("CARAFE_DATABASE_URL", url));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = serve(cwd.path(), &env).await;
    let data = cwd.path().join("carafe-data");
    let key = std::fs::read_to_string(data.join("admin-key")).unwrap();
    let key = key.trim();
    let _held = start_slow_upload(&server.addr, key, &data.join("files/.tmp")).await;
    server.child.kill().await.unwrap();
    let crashed = Instant::now();

    let server = serve(cwd.path(), &env).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = server.url("");
    let retry = loop {
        let res = upload_again(&client, &base, key).await;
        if res.status() != 409 {
            break res;
        }
        problem(res, 409, "idempotency_request_in_progress").await;
        assert!(
            crashed.elapsed() < lock + Duration::from_secs(10),
            "the key is still held {:?} after the crash",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(retry.status(), 202, "the retry runs");
    assert!(retry.headers().get("idempotent-replayed").is_none());
    let listed: Value = client
        .get(server.url("/api/v1/files"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}
