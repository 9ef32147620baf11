//! Resumable uploads to an encrypting bucket: no chunk ever rests in plaintext (nor does any
//! other file of the data dir while the upload is in progress), the completed file is the
//! uploaded bytes and is encrypted at rest, a damaged or swapped chunk ends the upload cleanly,
//! a missing master key is said, and master key rotation carries uploads in progress along.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use carafe::config::Secret;
use carafe::files::store::master_keys::MasterKey;
use carafe_core::files::UploadId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};
use crate::tus::{chunks, content, head, header, metadata, patch, ready_file, sha256, tus};

file_tests!(
    tus_enc_chunks_are_sealed_from_the_first_byte,
    tus_enc_damaged_chunks_end_the_upload,
    tus_enc_rotation_carries_uploads_in_progress,
);

/// Appears all through the uploaded text: it must never be found at rest.
const MARKER: &[u8] = b"TUS-PLAINTEXT-MARKER-7f3a";

fn key(n: u8) -> String {
    STANDARD.encode([n; 32])
}

fn kid(n: u8) -> String {
    MasterKey::parse(&key(n)).unwrap().kid().to_owned()
}

async fn spawn(backend: Backend) -> TestApp {
    let app = TestApp::spawn_with(backend, |c| c.master_key = Some(Secret::new(key(1)))).await;
    let res = app
        .request(Method::PUT, "/api/v1/buckets/vault", Some(&app.admin_key))
        .json(&json!({"encrypt": true}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    app
}

/// Text of `len` bytes with `MARKER` every 4 KiB.
fn text(len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = (0..len).map(|i| b'a' + ((i * 7) % 26) as u8).collect();
    for at in (0..len.saturating_sub(MARKER.len())).step_by(4096) {
        out[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The upload's chunk objects as stored (keys and bytes), in offset order.
async fn stored_chunks(app: &TestApp, url: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("uploads/{}", crate::tus::upload_id(url));
    let mut names = chunks(app, url).await;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let key = format!("{prefix}/{name}");
        let bytes = app.object(&key).await;
        out.push((key, bytes));
    }
    out
}

/// Nothing at rest holds the plaintext: neither the upload's chunks nor any file of the data
/// dir (temporary files, the database).
async fn assert_no_plaintext_at_rest(app: &TestApp, url: &str) {
    for (key, bytes) in stored_chunks(app, url).await {
        assert!(bytes.starts_with(b"CRF1"), "{key} is sealed");
        assert!(!find(&bytes, MARKER), "plaintext in {key}");
    }
    for path in files_under(app.data_dir()) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue; // Removed while we looked (a temporary file).
        };
        assert!(!find(&bytes, MARKER), "plaintext at rest in {path:?}");
    }
}

/// Creates an upload to `vault`, its first chunk sent with the creation; returns its URL.
async fn create_with(app: &TestApp, length: usize, first: &[u8]) -> String {
    let meta = metadata(&[("filename", "notes.txt"), ("bucket", "vault")]);
    let res = tus(app, Method::POST, "/api/v1/uploads", &app.admin_key)
        .header("upload-length", length.to_string())
        .header("upload-metadata", meta)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", sha256(first))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "upload-offset"), first.len().to_string());
    header(&res, "location")
}

async fn upload_row(app: &TestApp, url: &str) -> carafe_core::files::Upload {
    let id: UploadId = crate::tus::upload_id(url).parse().unwrap();
    let store = app.state.files.store();
    store.get_upload(id).await.unwrap().expect("the upload")
}

async fn offset(app: &TestApp, url: &str) -> String {
    let res = head(app, &app.admin_key, url).await;
    assert_eq!(res.status(), 200);
    header(&res, "upload-offset")
}

/// Completes an upload with its `last` chunk at `at`; returns the ready file.
async fn finish(app: &TestApp, url: &str, at: usize, last: &[u8]) -> Value {
    let res = patch(app, &app.admin_key, url, at, last).await;
    assert_eq!(res.status(), 204);
    ready_file(app, &header(&res, "carafe-file-id")).await
}

async fn tus_enc_chunks_are_sealed_from_the_first_byte(backend: Backend) {
    let app = spawn(backend).await;
    // Chunks across segment boundaries (64 KiB), and one smaller than a segment.
    let plain = text(150 * 1024 + 123);
    let cuts = [0, 70 * 1024, 140 * 1024, 150 * 1024, plain.len()];
    let url = create_with(&app, plain.len(), &plain[..cuts[1]]).await;
    let row = upload_row(&app, &url).await;
    let enc = row
        .encryption
        .expect("an upload to an encrypting bucket has a key");
    assert_eq!(enc.kid, kid(1));
    for (i, pair) in cuts.windows(2).enumerate().skip(1) {
        assert_eq!(chunks(&app, &url).await.len(), i, "one object per chunk");
        assert_no_plaintext_at_rest(&app, &url).await;
        assert_eq!(
            offset(&app, &url).await,
            pair[0].to_string(),
            "plaintext offsets"
        );
        if pair[1] == plain.len() {
            break;
        }
        let res = patch(
            &app,
            &app.admin_key,
            &url,
            pair[0],
            &plain[pair[0]..pair[1]],
        )
        .await;
        assert_eq!(res.status(), 204);
        assert_eq!(header(&res, "upload-offset"), pair[1].to_string());
    }
    // A chunk's checksum is checked on its plaintext: a wrong one is refused before sealing.
    let at = cuts[3];
    let res = tus(&app, Method::PATCH, &url, &app.admin_key)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", at.to_string())
        .header("upload-checksum", sha256(b"something else"))
        .body(plain[at..].to_vec())
        .send()
        .await
        .unwrap();
    problem(res, 460, "checksum_mismatch").await;

    let file = finish(&app, &url, at, &plain[at..]).await;
    assert_eq!(file["encrypted"], true, "{file}");
    assert_eq!(file["size"], plain.len() as u64);
    let id = file["id"].as_str().unwrap();
    assert_eq!(content(&app, id).await, plain, "byte-identical");
    let object = app.object(&format!("objects/{id}")).await;
    assert!(object.starts_with(b"CRF1") && !find(&object, MARKER));
    assert!(chunks(&app, &url).await.is_empty(), "chunks deleted");
    assert_no_plaintext_at_rest(&app, &url).await;

    // A bucket in the clear gives its uploads no key.
    let res = crate::tus::create(
        &app,
        &app.admin_key,
        10,
        &metadata(&[("filename", "a.txt")]),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        upload_row(&app, &header(&res, "location")).await.encryption,
        None
    );
}

async fn tus_enc_damaged_chunks_end_the_upload(backend: Backend) {
    let app = spawn(backend).await;
    let plain = text(100 * 1024);
    let n = 40 * 1024;
    for damage in ["flip", "swap"] {
        let url = create_with(&app, plain.len(), &plain[..n]).await;
        let res = patch(&app, &app.admin_key, &url, n, &plain[n..2 * n]).await;
        assert_eq!(res.status(), 204);
        let stored = stored_chunks(&app, &url).await;
        assert_eq!(stored.len(), 2);
        let [(first, a), (second, b)] = <[_; 2]>::try_from(stored).unwrap();
        match damage {
            // One flipped bit of ciphertext: the chunk fails authentication.
            "flip" => {
                let mut a = a;
                a[30_000] ^= 0x01;
                app.put_object(&first, a).await;
            }
            // Two whole chunks of the same upload (and key) exchanged: each decrypts, but
            // neither is what was received at its offset.
            _ => {
                app.put_object(&first, b).await;
                app.put_object(&second, a).await;
            }
        }
        let res = patch(&app, &app.admin_key, &url, 2 * n, &plain[2 * n..]).await;
        assert_eq!(header(&res, "carafe-upload-error"), "upload_corrupt");
        let body = problem(res, 422, "upload_corrupt").await;
        assert!(
            !body.to_string().contains("uploads/"),
            "no internals: {body}"
        );
        // The upload has ended for good, and says why; nothing became a file.
        let res = head(&app, &app.admin_key, &url).await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "upload-offset"), plain.len().to_string());
        assert_eq!(header(&res, "carafe-upload-error"), "upload_corrupt");
        assert!(res.headers().get("carafe-file-id").is_none());
        let res = patch(&app, &app.admin_key, &url, 2 * n, &plain[2 * n..]).await;
        problem(res, 409, "upload_ended").await;
        assert_eq!(app.files().await.len(), 0, "{damage}: nothing is served");
        assert!(chunks(&app, &url).await.is_empty(), "chunks deleted");
    }
}

async fn tus_enc_rotation_carries_uploads_in_progress(backend: Backend) {
    let mut first = spawn(backend).await;
    let plain = text(90 * 1024);
    let n = 50 * 1024;
    let url = create_with(&first, plain.len(), &plain[..n]).await;
    first.begin_stop();
    first.wait_stopped().await.unwrap();

    // Without the key that sealed it, the upload cannot go on: said, not garbled.
    let mut wrong = first
        .restarted(|c| c.master_key = Some(Secret::new(key(2))))
        .await;
    let url2 = url_on(&wrong, &url);
    let res = patch(&wrong, &wrong.admin_key, &url2, n, &plain[n..]).await;
    problem(res, 503, "encryption_key_missing").await;
    assert_eq!(offset(&wrong, &url2).await, n.to_string(), "nothing lost");
    assert_eq!(chunks(&wrong, &url2).await.len(), 1);
    wrong.begin_stop();
    wrong.wait_stopped().await.unwrap();

    let mut rotating = first
        .restarted(|c| {
            c.master_key = Some(Secret::new(key(2)));
            c.master_keys_previous = vec![Secret::new(key(1))];
        })
        .await;
    let url3 = url_on(&rotating, &url);
    let sealed_before = stored_chunks(&rotating, &url3).await;
    let files = &rotating.state.files;
    let rotate =
        || carafe::files::store::rotate::rotate_master(files.store().as_ref(), &files.keys);
    assert_eq!(rotate().await.unwrap(), 1, "the upload's key");
    assert_eq!(rotate().await.unwrap(), 0, "rotation is idempotent");
    let row = upload_row(&rotating, &url3).await;
    assert_eq!(row.encryption.unwrap().kid, kid(2));
    let sealed_after = stored_chunks(&rotating, &url3).await;
    assert_eq!(sealed_after, sealed_before, "objects are not rewritten");
    rotating.begin_stop();
    rotating.wait_stopped().await.unwrap();

    // The old key is gone: the upload completes under the new one.
    let only_new = first
        .restarted(|c| c.master_key = Some(Secret::new(key(2))))
        .await;
    let url4 = url_on(&only_new, &url);
    let file = finish(&only_new, &url4, n, &plain[n..]).await;
    assert_eq!(file["encrypted"], true);
    assert_eq!(
        content(&only_new, file["id"].as_str().unwrap()).await,
        plain
    );
}

/// The same upload's URL on another server (restarts listen on a new port).
fn url_on(app: &TestApp, url: &str) -> String {
    app.url(&format!("/api/v1/uploads/{}", crate::tus::upload_id(url)))
}
