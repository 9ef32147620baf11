//! Encryption at rest: files of an encrypting bucket round-trip (whole, ranges, validators)
//! while the stored objects hold no plaintext; images are still stripped and thumbnailed;
//! tampering is detected; master keys rotate without touching objects.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use carafe::config::Secret;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::files::{png, upload_raw};
use crate::helpers::{Backend, TestApp, problem};

file_tests!(
    file_enc_round_trips_with_ranges_and_validators,
    file_enc_images_are_stripped_and_thumbnailed,
    file_enc_tampering_is_never_served,
    file_enc_master_keys_rotate,
    file_enc_needs_a_master_key,
    file_enc_buckets_refuse_direct_uploads;
    // Presigned downloads exist on S3 only.
    s3: file_enc_on_s3_is_decrypted_never_redirected,
);

fn key(n: u8) -> String {
    STANDARD.encode([n; 32])
}

async fn spawn(backend: Backend) -> TestApp {
    let app = TestApp::spawn_with(backend, |c| c.master_key = Some(Secret::new(key(1)))).await;
    put_bucket(&app, "vault", json!({"encrypt": true})).await;
    app
}

async fn put_bucket(app: &TestApp, name: &str, policy: Value) -> Response {
    app.request(
        Method::PUT,
        &format!("/api/v1/buckets/{name}"),
        Some(&app.admin_key),
    )
    .json(&policy)
    .send()
    .await
    .unwrap()
}

/// Uploads into `vault` and waits for processing; the file must end up ready.
async fn upload(app: &TestApp, name: &str, bytes: Vec<u8>) -> Value {
    let res = upload_raw(app, &app.admin_key, "?bucket=vault&wait=30", name, bytes).await;
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["status"], "ready", "{file}");
    file
}

fn text(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + i / 997) % 26) as u8)
        .collect()
}

fn object(file: &Value) -> String {
    format!("objects/{}", file["id"].as_str().unwrap())
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = app.request(Method::GET, path, Some(&app.admin_key));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn file_enc_round_trips_with_ranges_and_validators(backend: Backend) {
    let app = spawn(backend).await;
    // 100 KiB comes through the memory cache; 1 MiB + 5 streams from disk.
    for len in [100 * 1024, 1024 * 1024 + 5] {
        let plain = text(len);
        let file = upload(&app, "notes.txt", plain.clone()).await;
        assert_eq!(file["size"], len as u64);
        assert_eq!(file["encrypted"], true);
        let stored = app.object(&object(&file)).await;
        assert!(stored.starts_with(b"CRF1"));
        assert!(!find(&stored, &plain[1000..1032]), "plaintext stored");
        let path = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
        for _ in 0..2 {
            let res = get(&app, &path, &[]).await;
            assert_eq!(res.status(), 200);
            let etag = res.headers()["etag"].to_str().unwrap().to_owned();
            assert_eq!(etag, format!("\"{}\"", file["sha256"].as_str().unwrap()));
            assert_eq!(res.bytes().await.unwrap(), plain);
            let res = get(&app, &path, &[("if-none-match", &etag)]).await;
            assert_eq!(res.status(), 304);
        }
        // Across the first segment boundary.
        let res = get(&app, &path, &[("range", "bytes=65530-65545")]).await;
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap(), plain[65530..65546]);
        let last = len - 1;
        let res = get(
            &app,
            &path,
            &[("range", &format!("bytes=0-3,70000-90000,{last}-"))],
        )
        .await;
        assert_eq!(res.status(), 206);
        let body = res.bytes().await.unwrap();
        assert!(find(&body, &plain[..4]));
        assert!(find(&body, &plain[70000..=90000]));
    }
}

async fn file_enc_images_are_stripped_and_thumbnailed(backend: Backend) {
    let app = spawn(backend).await;
    let res = put_bucket(
        &app,
        "vault",
        json!({"encrypt": true, "thumbnails": [{"name": "small", "width": 32, "height": 32}]}),
    )
    .await;
    assert!(res.status().is_success());
    let mut original = png(120, 80);
    // A tEXt chunk after IHDR: metadata that stripping removes.
    let chunk = b"tEXtComment\0gps-secret";
    let mut text_chunk = (chunk.len() as u32 - 4).to_be_bytes().to_vec();
    text_chunk.extend_from_slice(chunk);
    text_chunk.extend_from_slice(&crc(chunk).to_be_bytes());
    original.splice(33..33, text_chunk);
    let file = upload(&app, "map.png", original.clone()).await;
    let id = file["id"].as_str().unwrap();
    let served = get(&app, &format!("/api/v1/files/{id}/content"), &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert!(served.starts_with(b"\x89PNG"));
    assert!(!find(&served, b"gps-secret"), "metadata stripped");
    assert_eq!(file["size"], served.len() as u64);
    let decoded = image::load_from_memory(&served).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (120, 80));
    let stored = app.object(&object(&file)).await;
    assert!(stored.starts_with(b"CRF1") && !find(&stored, b"IHDR"));
    let thumb = get(&app, &format!("/api/v1/files/{id}/thumbnails/small"), &[]).await;
    assert_eq!(thumb.status(), 200);
    let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert!(thumb.width() <= 32 && thumb.height() <= 32);
    let thumbs = app.objects(&format!("thumbs/{id}")).await;
    assert!(!thumbs.is_empty());
    for name in thumbs {
        let bytes = app.object(&format!("thumbs/{id}/{name}")).await;
        assert!(bytes.starts_with(b"CRF1"), "thumbnails are encrypted too");
    }
}

fn crc(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A download of tampered bytes must fail: an error status, or a response that breaks off
/// (before or after its head).
async fn assert_not_served(res: reqwest::Result<Response>, plain: &[u8]) {
    let Ok(res) = res else { return };
    if !res.status().is_success() {
        return;
    }
    match res.bytes().await {
        Err(_) => {}
        Ok(body) => panic!(
            "tampered bytes served ({} bytes, equal to the original: {})",
            body.len(),
            &body[..] == plain
        ),
    }
}

async fn file_enc_tampering_is_never_served(backend: Backend) {
    let app = spawn(backend).await;
    for len in [1000, 700 * 1024] {
        let plain = text(len);
        let file = upload(&app, "notes.txt", plain.clone()).await;
        let key = object(&file);
        let mut stored = app.object(&key).await;
        let at = stored.len() / 2;
        stored[at] ^= 0x01;
        app.put_object(&key, stored).await;
        let url = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
        let req = |range: Option<String>| {
            let req = app.request(Method::GET, &url, Some(&app.admin_key));
            match range {
                Some(r) => req.header("range", r),
                None => req,
            }
            .send()
        };
        assert_not_served(req(None).await, &plain).await;
        let middle = format!("bytes={}-{}", len / 2 - 10, len / 2 + 10);
        assert_not_served(req(Some(middle)).await, &plain).await;
    }
}

async fn file_enc_master_keys_rotate(backend: Backend) {
    let mut first = spawn(backend).await;
    let plain = text(200 * 1024);
    let file = upload(&first, "notes.txt", plain.clone()).await;
    let url = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
    first.begin_stop();
    first.wait_stopped().await.unwrap();

    // Only the new key: the file's key cannot be unwrapped, and that is said, not garbled.
    let mut wrong = first
        .restarted(|c| c.master_key = Some(Secret::new(key(2))))
        .await;
    problem(get(&wrong, &url, &[]).await, 503, "encryption_key_missing").await;
    wrong.begin_stop();
    wrong.wait_stopped().await.unwrap();

    let mut rotating = first
        .restarted(|c| {
            c.master_key = Some(Secret::new(key(2)));
            c.master_keys_previous = vec![Secret::new(key(1))];
        })
        .await;
    assert_eq!(
        get(&rotating, &url, &[]).await.bytes().await.unwrap(),
        plain
    );
    let files = &rotating.state.files;
    let n = carafe::files::store::rotate::rotate_master(files.store().as_ref(), &files.keys)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let again = carafe::files::store::rotate::rotate_master(files.store().as_ref(), &files.keys)
        .await
        .unwrap();
    assert_eq!(again, 0, "rotation is idempotent");
    rotating.begin_stop();
    rotating.wait_stopped().await.unwrap();

    let only_new = first
        .restarted(|c| c.master_key = Some(Secret::new(key(2))))
        .await;
    let res = get(&only_new, &url, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), plain);
}

async fn file_enc_needs_a_master_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = put_bucket(&app, "vault", json!({"encrypt": true})).await;
    let body = problem(res, 422, "validation_failed").await;
    assert!(body.to_string().contains("master key"), "{body}");
}

#[tokio::test]
async fn file_enc_a_configured_encrypting_bucket_needs_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(Backend::Sqlite, dir.path()).await;
    let policy = carafe_core::files::BucketPolicy {
        encrypt: true,
        ..Default::default()
    };
    config.files.buckets.insert("vault".into(), policy);
    let err = carafe::App::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("master key"), "{err}");
    config.master_key = Some(Secret::new(key(1)));
    assert!(carafe::App::build(config).await.is_ok());
}

async fn file_enc_on_s3_is_decrypted_never_redirected(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.master_key = Some(Secret::new(key(1)))).await;
    let res = put_bucket(
        &app,
        "vault",
        json!({"encrypt": true, "presigned_downloads": true}),
    );
    assert!(res.await.status().is_success());
    let plain = text(300 * 1024);
    let file = upload(&app, "notes.txt", plain.clone()).await;
    let id = file["id"].as_str().unwrap();
    let stored = app.object(&format!("objects/{id}")).await;
    assert!(stored.starts_with(b"CRF1") && !find(&stored, &plain[5000..5032]));
    let path = format!("/api/v1/files/{id}/content");
    let res = get(&app, &path, &[]).await;
    assert_eq!(
        res.status(),
        200,
        "no presigned redirect for encrypted files"
    );
    assert_eq!(res.bytes().await.unwrap(), plain);
    let res = get(&app, &path, &[("range", "bytes=131070-131080")]).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), plain[131070..=131080]);
}

async fn file_enc_buckets_refuse_direct_uploads(backend: Backend) {
    let app = spawn(backend).await;
    let res = put_bucket(
        &app,
        "sealed",
        json!({"encrypt": true, "allowed_types": ["pdf"]}),
    )
    .await;
    assert_eq!(res.status(), 201);
    // Bytes sent straight to storage would bypass encryption.
    let res = app
        .post_json(
            "/api/v1/files/direct",
            Some(&app.admin_key),
            &json!({"bucket": "sealed", "name": "a.pdf", "size": 100}),
        )
        .await;
    problem(res, 409, "bucket_encrypted").await;
}
