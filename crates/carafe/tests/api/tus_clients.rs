//! Who may write to an upload: concurrent writers on one instance and on two sharing a
//! database, end users and their own uploads, files their bucket refuses, and a real tus
//! client (tuspy).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::files::{pdf, png};
use crate::helpers::{Backend, TestApp, eventually, problem};
use crate::tus::{
    big_pdf, chunks, content, create, head, header, new_upload, offset_of, patch, ready_file, tus,
    upload_id,
};

file_tests!(
    concurrent_patches_have_one_winner,
    users_see_only_their_own_uploads,
    a_refused_type_fails_the_upload,
);

async fn concurrent_patches_have_one_winner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let variants: Vec<Vec<u8>> = (0..6).map(|i| big_pdf(200_000, i)).collect();
    let length = variants[0].len();
    assert!(variants.iter().all(|v| v.len() == length));
    let url = new_upload(&app, &app.admin_key, length, "race.pdf").await;
    let head_bytes = &variants[0][..1000];
    assert_eq!(
        patch(&app, &app.admin_key, &url, 0, head_bytes)
            .await
            .status(),
        204
    );
    let racers: Vec<_> = variants
        .iter()
        .map(|v| {
            let mut whole = head_bytes.to_vec();
            whole.extend_from_slice(&v[1000..]);
            whole
        })
        .collect();
    let answers = futures::future::join_all(
        racers
            .iter()
            .map(|whole| patch(&app, &app.admin_key, &url, 1000, &whole[1000..])),
    )
    .await;
    let mut winner = None;
    for (i, res) in answers.into_iter().enumerate() {
        match res.status().as_u16() {
            204 => {
                assert!(winner.is_none(), "two PATCHes succeeded");
                winner = Some((i, header(&res, "carafe-file-id")));
            }
            409 => {
                let body: Value = res.json().await.unwrap();
                let code = body["code"].as_str().unwrap();
                assert!(
                    ["upload_locked", "offset_mismatch", "upload_ended"].contains(&code),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    let (i, id) = winner.expect("one PATCH succeeded");
    ready_file(&app, &id).await;
    assert_eq!(
        content(&app, &id).await,
        racers[i],
        "one writer's bytes, whole"
    );
    let files = app.files().await;
    assert_eq!(files.len(), 1, "one file");
}

async fn users_see_only_their_own_uploads(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user_token("alice", &["files"]).await;
    let bob = app.user_token("bob", &["files"]).await;
    let reader = app.user_token("carol", &["jobs"]).await;
    let bytes = pdf("alice's");
    let url = new_upload(&app, &alice, bytes.len(), "mine.pdf").await;
    assert_eq!(head(&app, &alice, &url).await.status(), 200);
    assert_eq!(
        head(&app, &app.admin_key, &url).await.status(),
        200,
        "keys see all"
    );
    assert_eq!(head(&app, &bob, &url).await.status(), 404);
    problem(patch(&app, &bob, &url, 0, &bytes).await, 404, "not_found").await;
    let res = tus(&app, Method::DELETE, &url, &bob).send().await.unwrap();
    problem(res, 404, "not_found").await;
    let res = create(&app, &reader, 10, "").await;
    problem(res, 403, "insufficient_scope").await;
    let res = patch(&app, &alice, &url, 0, &bytes).await;
    assert_eq!(res.status(), 204);
    let file = ready_file(&app, &header(&res, "carafe-file-id")).await;
    assert_eq!(file["owner"], "alice");
    // A key may create an upload on a user's behalf.
    let res = tus(
        &app,
        Method::POST,
        "/api/v1/uploads?owner=bob",
        &app.admin_key,
    )
    .header("upload-length", "10")
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        head(&app, &bob, &header(&res, "location")).await.status(),
        200
    );
}

async fn a_refused_type_fails_the_upload(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = png(64, 64);
    let url = new_upload(&app, &app.admin_key, bytes.len(), "photo.pdf").await;
    let half = bytes.len() / 2;
    assert_eq!(
        patch(&app, &app.admin_key, &url, 0, &bytes[..half])
            .await
            .status(),
        204
    );
    let res = patch(&app, &app.admin_key, &url, half, &bytes[half..]).await;
    assert_eq!(header(&res, "tus-resumable"), "1.0.0");
    problem(res, 415, "extension_mismatch").await;
    let res = head(&app, &app.admin_key, &url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "carafe-upload-error"), "extension_mismatch");
    assert!(res.headers().get("carafe-file-id").is_none());
    let files = app.files().await;
    assert!(files.is_empty(), "no file");
    assert!(chunks(&app, &url).await.is_empty());
    let res = patch(&app, &app.admin_key, &url, half, &bytes[half..]).await;
    problem(res, 409, "upload_ended").await;
}

/// Tests that need PostgreSQL (two instances) or tuspy, on each storage.
mod services {
    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
    async fn two_instances_share_one_upload() {
        super::two_instances_share_one_upload(crate::helpers::Backend::Postgres).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_S3_URL and CARAFE_TEST_POSTGRES_URL"]
    async fn s3_two_instances_share_one_upload() {
        super::two_instances_share_one_upload(crate::helpers::Backend::S3Postgres).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_TUSPY"]
    async fn the_tuspy_client_uploads_in_chunks() {
        super::the_tuspy_client_uploads_in_chunks(crate::helpers::Backend::Sqlite).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_TUSPY and CARAFE_TEST_S3_URL"]
    async fn s3_the_tuspy_client_uploads_in_chunks() {
        super::the_tuspy_client_uploads_in_chunks(crate::helpers::Backend::S3Sqlite).await
    }
}

/// Two instances on one PostgreSQL and one storage (a shared directory, or S3): a PATCH on
/// one holds the upload's lock, so a PATCH on the other is refused until it is done; the
/// upload then continues on the other instance and completes there.
async fn two_instances_share_one_upload(backend: Backend) {
    let storage = tempfile::tempdir().unwrap();
    let url = format!("file://{}", storage.path().display());
    let a = TestApp::spawn_with(backend, |c| {
        // Local disk is shared through a directory outside either instance's data dir.
        if !backend.s3() {
            c.storage_url = Some(carafe::config::Secret::new(url));
        }
    })
    .await;
    let b = a.sibling(Default::default()).await;
    let bytes = big_pdf(100_000, 3);
    let upload = new_upload(&a, &a.admin_key, bytes.len(), "shared.pdf").await;
    let id = upload_id(&upload).parse().unwrap();
    let on_b = upload.replace(&a.base, &b.base);

    // A slow PATCH on `a`: its body arrives only when we send it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let slow = tus(&a, Method::PATCH, &upload, &a.admin_key)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(body)
        .send();
    let slow = tokio::spawn(slow);
    tx.send(Ok(bytes[..30_000].to_vec())).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let row = a.state.store.get_upload(id).await.unwrap().unwrap();
        row.lock_holder.is_some()
    })
    .await;
    let res = patch(&b, &b.admin_key, &on_b, 0, &bytes[..50_000]).await;
    problem(res, 409, "upload_locked").await;
    tx.send(Ok(bytes[30_000..50_000].to_vec())).await.unwrap();
    drop(tx);
    let res = slow.await.unwrap().unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "upload-offset"), "50000");
    assert_eq!(offset_of(&b, &on_b).await, 50_000);
    let res = patch(&b, &b.admin_key, &on_b, 50_000, &bytes[50_000..]).await;
    assert_eq!(res.status(), 204, "the chunk stored by `a` is read by `b`");
    let file = header(&res, "carafe-file-id");
    ready_file(&a, &file).await;
    assert_eq!(content(&a, &file).await, bytes);
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A tus client we did not write: tuspy uploads 3 MiB in 1 MiB chunks (with sha256
/// checksums) through `examples/tus_upload.py`, and the file arrives intact.
async fn the_tuspy_client_uploads_in_chunks(backend: Backend) {
    let python = std::env::var("CARAFE_TEST_TUSPY").unwrap_or_else(|_| {
        panic!(
            "CARAFE_TEST_TUSPY is not set: it names a python with tuspy (scripts/test-all sets it)"
        )
    });
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("큰 파일.txt");
    let text: String = (0..3 * 1024 * 1024)
        .map(|i: usize| {
            if i % 64 == 63 {
                '\n'
            } else {
                (b'a' + (i % 26) as u8) as char
            }
        })
        .collect();
    std::fs::write(&path, &text).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tus_upload.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&path)
        .env("CARAFE_URL", &app.base)
        .env("CARAFE_KEY", &app.admin_key)
        .env("CARAFE_CHUNK_BYTES", (1024 * 1024).to_string())
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let upload = printed["upload"].as_str().unwrap();
    let id = upload_id(upload).parse().unwrap();
    let row = app.state.store.get_upload(id).await.unwrap().unwrap();
    assert_eq!(row.offset, 3 * 1024 * 1024);
    assert_eq!(
        row.chunks, 2,
        "two chunks appended, the third completed the upload"
    );
    let file_id = printed["file_id"].as_str().unwrap();
    let file = ready_file(&app, file_id).await;
    assert_eq!(file["name"], "큰 파일.txt");
    assert_eq!(file["type"], "txt");
    assert_eq!(content(&app, file_id).await, text.as_bytes());
}
